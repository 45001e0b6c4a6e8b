-- name: insert_event
-- One row per delivery target of the event (see event_targets; $7: `[webhooks] url` is set), each
-- payload carrying its id.
INSERT INTO events (id, payment_id, merchant, endpoint_id, type, payload, created_at)
SELECT t.id, $2, $3, t.endpoint_id, $4, jsonb_set($5::jsonb, '{id}', to_jsonb(t.id)), $6
FROM event_targets($3, $4, $1, $7) t
RETURNING id;

-- name: list_events
-- Newest first; $1 merchant (NULL: all, for the operator's CLI), $4 cursor = last seq seen.
SELECT seq, id, payment_id, merchant, endpoint_id, type, status, attempts, held, created_at,
       next_attempt_at, delivered_at, last_error, payload::text AS payload
FROM events
WHERE ($1::text IS NULL OR merchant = $1)
  AND ($2::text IS NULL OR payment_id = $2)
  AND ($3::text IS NULL OR status = $3)
  AND ($4::bigint IS NULL OR seq < $4)
ORDER BY seq DESC
LIMIT $5;

-- name: attempts_of_events
SELECT event_id, attempted_at, url, http_status, latency_ms, error, response_body
FROM delivery_attempts
WHERE event_id = ANY($1::text[])
ORDER BY event_id, attempted_at, id;

-- name: event_by_id
SELECT seq, id, payment_id, merchant, endpoint_id, type, status, attempts, held, created_at,
       next_attempt_at, delivered_at, last_error, payload::text AS payload
FROM events
WHERE id = $1 AND ($2::text IS NULL OR merchant = $2);

-- name: redeliver_event
-- Re-queue a delivered or failed event with a fresh retry schedule; its attempt log stays. An
-- event of a deleted endpoint stays as it is.
UPDATE events
SET status = 'pending', attempts = 0, next_attempt_at = now(), last_error = NULL
WHERE id = $1 AND ($2::text IS NULL OR merchant = $2) AND status IN ('delivered', 'failed')
  AND (endpoint_id IS NULL
       OR endpoint_id IN (SELECT w.id FROM webhook_endpoints w WHERE w.deleted_at IS NULL))
RETURNING id;
