-- name: claim_events
-- Claim due events in one autocommitted statement: first attempts ($1 at most) before retries
-- ($2 at most), $3 in all. An event waits while an earlier event of its payment to the same
-- endpoint is pending. Events for the config endpoint (endpoint_id NULL) are claimed only when it
-- is set ($5), those for a deleted endpoint never. The claim is a lease: next_attempt_at moves
-- $4 seconds ahead, so no row lock is held over the HTTP call and a crashed worker's events come
-- due again; the lease value is the claim's token. Each row comes with its endpoint's URL and secrets (the previous one while its
-- rotation overlap lasts).
WITH fresh AS (
    SELECT e.seq, e.endpoint_id FROM events e
    WHERE e.status = 'pending' AND e.attempts = 0 AND NOT e.held AND e.next_attempt_at <= now()
      AND (e.endpoint_id IS NULL AND $5 OR EXISTS (
          SELECT 1 FROM webhook_endpoints w WHERE w.id = e.endpoint_id AND w.deleted_at IS NULL))
      AND NOT EXISTS (
          SELECT 1 FROM events p
          WHERE p.payment_id = e.payment_id AND p.status = 'pending' AND p.seq < e.seq
            AND p.endpoint_id IS NOT DISTINCT FROM e.endpoint_id)
    ORDER BY e.next_attempt_at, e.seq
    LIMIT $1
    FOR UPDATE SKIP LOCKED
), retry AS (
    SELECT e.seq, e.endpoint_id FROM events e
    WHERE e.status = 'pending' AND e.attempts > 0 AND e.next_attempt_at <= now()
      AND (e.endpoint_id IS NULL AND $5 OR EXISTS (
          SELECT 1 FROM webhook_endpoints w WHERE w.id = e.endpoint_id AND w.deleted_at IS NULL))
      AND NOT EXISTS (
          SELECT 1 FROM events p
          WHERE p.payment_id = e.payment_id AND p.status = 'pending' AND p.seq < e.seq
            AND p.endpoint_id IS NOT DISTINCT FROM e.endpoint_id)
    ORDER BY e.next_attempt_at, e.seq
    LIMIT $2
    FOR UPDATE SKIP LOCKED
), picked AS (
    SELECT seq, endpoint_id, false AS retry FROM fresh
    UNION ALL
    (SELECT seq, endpoint_id, true FROM retry LIMIT greatest(0, $3 - (SELECT count(*) FROM fresh)))
)
UPDATE events e
SET attempts = e.attempts + 1, next_attempt_at = now() + make_interval(secs => $4)
FROM picked LEFT JOIN webhook_endpoints w ON w.id = picked.endpoint_id
WHERE e.seq = picked.seq
RETURNING e.id, e.payment_id, e.attempts, e.next_attempt_at AS lease, picked.retry,
          e.payload::text AS body, e.endpoint_id, w.url, w.secret,
          CASE WHEN w.previous_secret_until > now() THEN w.previous_secret END AS previous_secret;

-- name: finish_attempts
-- Log attempts and settle their events, each only if its worker's lease still holds; one
-- statement for every attempt that ended meanwhile (one commit, not one each). While an event is
-- retried, the later events of its payment to its endpoint that never started are held out of
-- the due range; once it is delivered or failed, they are released. (An event with attempts > 0 may be in
-- flight, so it is never held: its lease would break.)
WITH ended AS (
    SELECT * FROM unnest($1::text[], $2::timestamptz[], $3::text[], $4::int[], $5::int[],
                         $6::text[], $7::text[], $8::text[], $9::timestamptz[], $10::timestamptz[])
        AS t(event_id, attempted_at, url, http_status, latency_ms, error, response_body, status,
             next_attempt_at, lease)
), attempt AS (
    INSERT INTO delivery_attempts
        (event_id, attempted_at, url, http_status, latency_ms, error, response_body)
    SELECT event_id, attempted_at, url, http_status, latency_ms, error, response_body FROM ended
), settled AS (
    UPDATE events e
    SET status = x.status,
        next_attempt_at = x.next_attempt_at,
        delivered_at = CASE WHEN x.status = 'delivered' THEN now() ELSE e.delivered_at END,
        last_error = x.error
    FROM ended x
    WHERE e.id = x.event_id AND e.status = 'pending' AND e.next_attempt_at = x.lease
    RETURNING e.id, e.payment_id, e.endpoint_id, e.seq, x.status = 'pending' AS retrying
), held AS (
    UPDATE events e
    SET held = s.retrying
    FROM settled s
    WHERE e.payment_id = s.payment_id AND e.seq > s.seq
      AND e.endpoint_id IS NOT DISTINCT FROM s.endpoint_id
      AND e.status = 'pending' AND e.attempts = 0 AND e.held <> s.retrying
)
SELECT id FROM settled;
