-- name: claim_deliveries
-- Claim due deliveries in one autocommitted statement, a fair share from each endpoint's lane
-- ('' for the `[webhooks] url`, claimed only while it is set: $5): at most $6 from a lane (and
-- $7 retries) unless this worker gives its room in ($8 lanes, $9 rooms, $10 retry rooms: lanes
-- it has deliveries in flight to), fresh ones before retries, and across lanes round-robin: each
-- lane's first before any lane's second.
-- First attempts go before retries, $1 at most of those and $2 of these, $3 in all; besides
-- each lane's opening (below), $11 at most less the openings. A delivery
-- waits while an earlier delivery of its payment to the same endpoint is pending; deliveries to
-- a deleted endpoint are never claimed. The claim is a lease: next_attempt_at moves $4 seconds
-- ahead, so no row lock is held over the HTTP call and a crashed worker's deliveries come due
-- again; the lease value is the claim's token. Each row comes with its event's id and body and
-- its endpoint's URL and secrets (the previous one while its rotation overlap lasts).
WITH RECURSIVE busy (lane) AS (
    -- The lanes with pending deliveries, one index probe each (a loose index scan).
    (SELECT lane FROM deliveries WHERE status = 'pending' ORDER BY lane LIMIT 1)
    UNION ALL
    SELECT (SELECT d.lane FROM deliveries d
            WHERE d.status = 'pending' AND d.lane > busy.lane ORDER BY d.lane LIMIT 1)
    FROM busy WHERE busy.lane IS NOT NULL
), lanes AS (
    SELECT b.lane, coalesce(r.room, $6) AS room, coalesce(r.retry_room, $7) AS retry_room
    FROM busy b
    LEFT JOIN unnest($8::text[], $9::int[], $10::int[]) AS r (lane, room, retry_room)
        ON r.lane = b.lane
    WHERE b.lane IS NOT NULL AND coalesce(r.room, $6) > 0
      AND (b.lane = '' AND $5 OR EXISTS (
          SELECT 1 FROM webhook_endpoints w WHERE w.id = b.lane AND w.deleted_at IS NULL))
), fresh AS (
    SELECT f.* FROM lanes l CROSS JOIN LATERAL (
        SELECT d.seq, d.lane, false AS retry, d.next_attempt_at FROM deliveries d
        WHERE d.lane = l.lane AND d.status = 'pending' AND d.attempts = 0 AND NOT d.held
          AND d.next_attempt_at <= now()
          AND NOT EXISTS (
              SELECT 1 FROM deliveries p
              WHERE p.payment_id = d.payment_id AND p.lane = d.lane
                AND p.status = 'pending' AND p.event_seq < d.event_seq)
        ORDER BY d.next_attempt_at, d.seq
        LIMIT l.room
        FOR UPDATE SKIP LOCKED
    ) f
), retry AS (
    SELECT r.* FROM lanes l CROSS JOIN LATERAL (
        SELECT d.seq, d.lane, true AS retry, d.next_attempt_at FROM deliveries d
        WHERE d.lane = l.lane AND d.status = 'pending' AND d.attempts > 0
          AND d.next_attempt_at <= now()
          AND NOT EXISTS (
              SELECT 1 FROM deliveries p
              WHERE p.payment_id = d.payment_id AND p.lane = d.lane
                AND p.status = 'pending' AND p.event_seq < d.event_seq)
        ORDER BY d.next_attempt_at, d.seq
        LIMIT least(l.room, l.retry_room, $2)
        FOR UPDATE SKIP LOCKED
    ) r
), candidates AS (
    -- Within a lane fresh ones first, up to its room. A lane's first fresh delivery is its
    -- `opening` when no first attempt of it is in flight here ($12: the lanes that have one):
    -- only openings may take the last free slots (all but $11), kept so that an endpoint is
    -- never shut out by others that fail or hang, nor by its own retries that do.
    SELECT c.seq, c.retry, c.next_attempt_at, c.rank,
           c.rank = 1 AND NOT c.retry AND NOT c.lane = ANY ($12::text[]) AS opening
    FROM (
        SELECT u.*, row_number() OVER (PARTITION BY u.lane ORDER BY u.retry, u.next_attempt_at,
                                                                  u.seq) AS rank
        FROM (SELECT * FROM fresh UNION ALL SELECT * FROM retry) u
    ) c
    JOIN lanes l ON l.lane = c.lane
    WHERE c.rank <= l.room
), ranked AS (
    SELECT seq, retry, opening,
           row_number() OVER (PARTITION BY retry ORDER BY rank, next_attempt_at, seq) AS n,
           row_number() OVER (PARTITION BY opening ORDER BY retry, rank, next_attempt_at, seq)
               AS m
    FROM candidates
), allowed AS (
    SELECT * FROM ranked WHERE n <= CASE WHEN retry THEN $2 ELSE $1 END
), picked AS (
    -- Openings come out of the kept slots first, so what they leave stays kept for the next.
    SELECT seq, retry FROM allowed
    WHERE opening OR m <= $11 - (SELECT count(*) FROM allowed WHERE opening)
    ORDER BY retry, opening DESC, n
    LIMIT $3
)
UPDATE deliveries d
SET attempts = d.attempts + 1, next_attempt_at = now() + make_interval(secs => $4)
FROM picked
JOIN deliveries dd ON dd.seq = picked.seq
JOIN events e ON e.id = dd.event_id
LEFT JOIN webhook_endpoints w ON w.id = dd.endpoint_id
WHERE d.seq = picked.seq
RETURNING d.id, d.event_id, d.payment_id, d.lane, d.attempts, d.next_attempt_at AS lease,
          picked.retry, e.payload::text AS body, d.endpoint_id, w.url, w.secret,
          CASE WHEN w.previous_secret_until > now() THEN w.previous_secret END AS previous_secret;

-- name: finish_attempts
-- Log attempts and settle their deliveries, each only if its worker's lease still holds; one
-- statement for every attempt that ended meanwhile (one commit, not one each). While a delivery
-- is retried, the later deliveries of its payment to its endpoint that never started are held
-- out of the due range; once it is delivered or failed, they are released. (A delivery with
-- attempts > 0 may be in flight, so it is never held: its lease would break.)
WITH ended AS (
    SELECT * FROM unnest($1::text[], $2::timestamptz[], $3::text[], $4::int[], $5::int[],
                         $6::text[], $7::text[], $8::text[], $9::timestamptz[], $10::timestamptz[])
        AS t(delivery_id, attempted_at, url, http_status, latency_ms, error, response_body, status,
             next_attempt_at, lease)
), attempt AS (
    INSERT INTO delivery_attempts
        (delivery_id, attempted_at, url, http_status, latency_ms, error, response_body)
    SELECT delivery_id, attempted_at, url, http_status, latency_ms, error, response_body
    FROM ended
), settled AS (
    UPDATE deliveries d
    SET status = x.status,
        next_attempt_at = x.next_attempt_at,
        delivered_at = CASE WHEN x.status = 'delivered' THEN now() ELSE d.delivered_at END,
        last_error = x.error
    FROM ended x
    WHERE d.id = x.delivery_id AND d.status = 'pending' AND d.next_attempt_at = x.lease
    RETURNING d.id, d.payment_id, d.lane, d.event_seq, x.status = 'pending' AS retrying
), held AS (
    UPDATE deliveries d
    SET held = s.retrying
    FROM settled s
    WHERE d.payment_id = s.payment_id AND d.lane = s.lane AND d.event_seq > s.event_seq
      AND d.status = 'pending' AND d.attempts = 0 AND d.held <> s.retrying
)
SELECT id FROM settled;
