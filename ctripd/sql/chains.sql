-- name: upsert_chain
INSERT INTO chains (name, chain_id) VALUES ($1, $2)
ON CONFLICT (name) DO UPDATE SET chain_id = EXCLUDED.chain_id
RETURNING *;

-- name: record_head
-- $3: the head block's timestamp, $4: seconds a head is trusted (two block times). A head the
-- scanner already reached (no new block) means it is caught up as of now, unless the head block
-- is older than that: then only as of that block's time plus $4 (a node behind its chain, or
-- stuck, keeps answering the same old head; the blocks mined since are unread).
UPDATE chains SET head = $2, head_time = $3, head_seen_at = now(),
    caught_up_at = CASE WHEN scanned_block >= $2
        THEN greatest(caught_up_at,
                      least(now(), $3::timestamptz + $4::float8 * interval '1 second'))
        ELSE caught_up_at END
WHERE name = $1;

-- name: all_chains
SELECT * FROM chains ORDER BY name;

-- name: try_lock
-- Leadership: the session-level advisory lock of a chain, held by the scanning process.
SELECT pg_try_advisory_lock(hashtextextended('ctripd.chain:' || $1, 0));

-- name: unlock
SELECT pg_advisory_unlock(hashtextextended('ctripd.chain:' || $1, 0));

-- name: chain_cursor
SELECT scanned_block FROM chains WHERE name = $1;

-- name: init_cursor
UPDATE chains SET scanned_block = $2, scanned_at = now()
WHERE name = $1 AND scanned_block IS NULL;

-- name: move_cursor
-- Compare-and-set: a range applies only on top of the cursor it was read from. Reaching the
-- recorded head means every transfer mined before that head was seen is recorded ($4: seconds
-- a head is trusted, as in record_head).
UPDATE chains SET scanned_block = $3, scanned_at = now(),
    caught_up_at = CASE WHEN $3 >= head
        THEN greatest(caught_up_at,
                      least(head_seen_at, head_time + $4::float8 * interval '1 second'))
        ELSE caught_up_at END
WHERE name = $1 AND scanned_block = $2;

-- name: block_hash
SELECT hash FROM blocks WHERE chain = $1 AND number = $2;

-- name: stored_blocks
SELECT number, hash FROM blocks WHERE chain = $1 ORDER BY number DESC;

-- name: store_blocks
INSERT INTO blocks (chain, number, hash, parent_hash)
SELECT $1, * FROM unnest($2::bigint[], $3::text[], $4::text[])
ON CONFLICT (chain, number) DO UPDATE
SET hash = EXCLUDED.hash, parent_hash = EXCLUDED.parent_hash;

-- name: prune_blocks
DELETE FROM blocks WHERE chain = $1 AND number <= $2;

-- name: drop_blocks_after
DELETE FROM blocks WHERE chain = $1 AND number > $2;

-- name: lock_cursor
-- Taken first in a step's transaction: true while the cursor is where the step was read from.
SELECT scanned_block = $2 FROM chains WHERE name = $1 FOR UPDATE;
