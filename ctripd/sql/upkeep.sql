-- name: try_fold_lock
-- One fold at a time across processes: two folding at once could lock counters in opposite orders.
SELECT pg_try_advisory_xact_lock(hashtextextended('ctripd.upkeep:fold_counts', 0));

-- name: fold_counts
-- The deltas the triggers appended, folded into the counters; deltas committed meanwhile wait for
-- the next fold (readers sum both, so they see the same figures either way).
WITH moved AS (DELETE FROM status_count_deltas RETURNING *)
INSERT INTO status_counts AS c (subject, chain, kind, status, n)
SELECT subject, chain, kind, status, sum(n) FROM moved GROUP BY subject, chain, kind, status
ON CONFLICT (subject, chain, kind, status) DO UPDATE SET n = c.n + EXCLUDED.n;

-- name: retention_seq
-- Events are appended in seq order, so the prune walks seq up to the first event created at or
-- after the cutoff $1 (or past the last event), never the whole table.
SELECT coalesce(
    (SELECT seq FROM events WHERE created_at >= $1 ORDER BY seq LIMIT 1),
    (SELECT max(seq) + 1 FROM events),
    0);

-- name: prune_events
-- Events created before $1 with seq in ($3, $2) none of whose deliveries is pending, $4 at a
-- time; their deliveries and attempts go with them (ON DELETE CASCADE). The deliveries are
-- locked and checked again: an event redelivered meanwhile (a delivery made pending) stays.
WITH old AS (
    SELECT e.id FROM events e
    WHERE e.seq > $3 AND e.seq < $2 AND e.created_at < $1
      AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = e.id AND d.status = 'pending')
    ORDER BY e.seq
    LIMIT $4
), locked AS (
    SELECT d.event_id, d.status FROM deliveries d
    WHERE d.event_id IN (SELECT id FROM old)
    FOR UPDATE
)
DELETE FROM events WHERE id IN (SELECT id FROM old)
  AND id NOT IN (SELECT event_id FROM locked WHERE status = 'pending')
RETURNING seq;
