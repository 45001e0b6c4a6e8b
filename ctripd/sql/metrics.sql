-- name: payments_by_status
-- From the trigger-kept counters and their unfolded deltas (migration 0014), never count(*) of
-- the table: a scrape costs the same at a million payments.
SELECT chain, status, sum(n)::bigint AS n FROM (
    SELECT chain, status, n FROM status_counts WHERE subject = 'payments'
    UNION ALL
    SELECT chain, status, n FROM status_count_deltas WHERE subject = 'payments'
) c
GROUP BY chain, status;

-- name: webhook_queue
-- Pending deliveries (queued, retrying or in flight) and failed ones (retries exhausted), each
-- read off its partial index; delivered ones, the bulk of the table, are never visited.
SELECT (SELECT count(*) FROM deliveries WHERE status = 'pending') AS pending,
       (SELECT count(*) FROM deliveries WHERE status = 'failed') AS failed,
       (SELECT extract(epoch FROM now() - min(e.created_at))::float8
        FROM deliveries d JOIN events e ON e.id = d.event_id
        WHERE d.status = 'pending') AS oldest_pending_age;

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
SELECT chain, kind, status, sum(n)::bigint AS n FROM (
    SELECT chain, kind, status, n FROM status_counts WHERE subject = 'sweeps'
    UNION ALL
    SELECT chain, kind, status, n FROM status_count_deltas WHERE subject = 'sweeps'
) c
GROUP BY chain, kind, status;
