-- name: payments_by_status
SELECT chain, status, count(*) AS n FROM payments GROUP BY chain, status;

-- name: webhook_queue
-- Pending events (queued, retrying or in flight) and failed ones (retries exhausted).
SELECT count(*) FILTER (WHERE status = 'pending') AS pending,
       count(*) FILTER (WHERE status = 'failed') AS failed,
       extract(epoch FROM now() - min(created_at) FILTER (WHERE status = 'pending'))::float8
           AS oldest_pending_age
FROM events
WHERE status IN ('pending', 'failed');

-- name: attempts_settled_upto
-- The newest delivery attempt after id $1 that started more than $2 seconds ago (NULL if none).
SELECT max(id) FROM delivery_attempts
WHERE id > $1 AND attempted_at < now() - make_interval(secs => $2);

-- name: delivery_latency
-- Delivery attempts with ids in ($2, $3] ($3 NULL: no upper end) per latency bucket: $1 holds
-- each bucket's upper bound + 1 ms, ascending, so bucket i (0-based) counts latencies above
-- bound i-1 and up to bound i; the last bucket, those above every bound.
SELECT width_bucket(latency_ms, $1::int[]) AS bucket, count(*) AS n, sum(latency_ms) AS total_ms
FROM delivery_attempts
WHERE id > $2 AND ($3::bigint IS NULL OR id <= $3) AND latency_ms IS NOT NULL
GROUP BY 1;

-- name: sweeps_by_status
SELECT chain, kind, status, count(*) AS n FROM sweeps GROUP BY chain, kind, status;
