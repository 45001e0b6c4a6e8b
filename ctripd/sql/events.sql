-- name: insert_event
-- The event and one delivery per endpoint it goes to (see event_endpoints; $7: `[webhooks] url`
-- is set); $5 the payload as JSON text.
WITH e AS (
    INSERT INTO events (id, payment_id, merchant, type, payload, created_at)
    VALUES ($1, $2, $3, $4, $5::text::jsonb, $6)
    RETURNING seq
)
INSERT INTO deliveries (id, event_id, event_seq, payment_id, endpoint_id)
SELECT 'dlv_' || replace(gen_random_uuid()::text, '-', ''), $1, e.seq, $2, t.endpoint_id
FROM e CROSS JOIN event_endpoints($3, $4, $7) t;

-- name: list_events
-- Newest first; $1 merchant (NULL: all, for the operator's CLI), $3 a delivery status some
-- delivery of the event is in, $4 cursor = last seq seen.
SELECT seq, id, payment_id, merchant, type, created_at, payload::text AS payload
FROM events e
WHERE ($1::text IS NULL OR merchant = $1)
  AND ($2::text IS NULL OR payment_id = $2)
  AND ($3::text IS NULL OR EXISTS (
      SELECT 1 FROM deliveries d WHERE d.event_id = e.id AND d.status = $3))
  AND ($4::bigint IS NULL OR seq < $4)
ORDER BY seq DESC
LIMIT $5;

-- name: deliveries_of_events
SELECT d.id, d.event_id, d.endpoint_id, d.status, d.attempts, d.held, d.next_attempt_at,
       d.delivered_at, d.last_error
FROM deliveries d
WHERE d.event_id = ANY($1::text[])
ORDER BY d.event_id, d.seq;

-- name: attempts_of_deliveries
SELECT delivery_id, attempted_at, url, http_status, latency_ms, error, response_body
FROM delivery_attempts
WHERE delivery_id = ANY($1::text[])
ORDER BY delivery_id, attempted_at, id;

-- name: event_by_id
SELECT seq, id, payment_id, merchant, type, created_at, payload::text AS payload
FROM events
WHERE id = $1 AND ($2::text IS NULL OR merchant = $2);

-- name: redeliver_event
-- Send an event again to each endpoint that takes it now: its delivered or failed deliveries to
-- live endpoints are queued again with a fresh retry schedule (their attempt logs stay), and a
-- live endpoint that never had one (created since, say) gets a new delivery. Endpoints with a
-- pending delivery of it are left alone. $3: `[webhooks] url` is set. Returns the deliveries
-- queued.
WITH ev AS (
    SELECT id, seq, payment_id, merchant, type FROM events
    WHERE id = $1 AND ($2::text IS NULL OR merchant = $2)
), targets AS (
    SELECT t.endpoint_id FROM ev CROSS JOIN event_endpoints(ev.merchant, ev.type, $3) t
), again AS (
    UPDATE deliveries d
    SET status = 'pending', attempts = 0, held = false, next_attempt_at = now(),
        last_error = NULL
    FROM ev
    WHERE d.event_id = ev.id AND d.status IN ('delivered', 'failed')
      AND EXISTS (SELECT 1 FROM targets t WHERE t.endpoint_id IS NOT DISTINCT FROM d.endpoint_id)
    RETURNING d.id
), fresh AS (
    INSERT INTO deliveries (id, event_id, event_seq, payment_id, endpoint_id)
    SELECT 'dlv_' || replace(gen_random_uuid()::text, '-', ''), ev.id, ev.seq, ev.payment_id,
           t.endpoint_id
    FROM ev CROSS JOIN targets t
    WHERE NOT EXISTS (SELECT 1 FROM deliveries d
                      WHERE d.event_id = ev.id AND d.endpoint_id IS NOT DISTINCT FROM t.endpoint_id)
    RETURNING id
)
SELECT id FROM again UNION ALL SELECT id FROM fresh;

-- name: pending_deliveries_of_event
SELECT count(*) FROM deliveries WHERE event_id = $1 AND status = 'pending';
