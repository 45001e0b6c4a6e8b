-- name: lock_merchant
-- Serializes endpoint creations of one merchant, so that their bound holds.
SELECT id FROM merchants WHERE id = $1 FOR UPDATE;

-- name: count_live
SELECT count(*) FROM webhook_endpoints WHERE merchant = $1 AND deleted_at IS NULL;

-- name: insert_endpoint
INSERT INTO webhook_endpoints (id, merchant, url, description, event_types, secret)
VALUES ($1, $2, $3, $4, $5, $6)
RETURNING *;

-- name: list_endpoints
SELECT * FROM webhook_endpoints
WHERE merchant = $1 AND deleted_at IS NULL
ORDER BY created_at, id;

-- name: endpoint_by_id
SELECT * FROM webhook_endpoints WHERE id = $1 AND merchant = $2 AND deleted_at IS NULL;

-- name: rotate_secret
-- The new secret signs from now on; the current one keeps signing beside it for $4 seconds.
UPDATE webhook_endpoints
SET previous_secret = secret, previous_secret_until = now() + make_interval(secs => $4),
    secret = $3
WHERE id = $1 AND merchant = $2 AND deleted_at IS NULL
RETURNING *;

-- name: delete_endpoint
-- Deleted endpoints stop receiving at once: their pending deliveries fail in the same statement.
WITH gone AS (
    UPDATE webhook_endpoints SET deleted_at = now()
    WHERE id = $1 AND merchant = $2 AND deleted_at IS NULL
    RETURNING id
), failed AS (
    UPDATE deliveries SET status = 'failed', last_error = 'endpoint deleted'
    WHERE endpoint_id = (SELECT id FROM gone) AND status = 'pending'
)
SELECT id FROM gone;
