-- name: watch_snapshot
-- The oldest transaction the current snapshot could not see: every payment row this snapshot
-- misses was written by a transaction at or after it. Run first in a REPEATABLE READ transaction.
SELECT pg_snapshot_xmin(pg_current_snapshot())::text;

-- name: watched_addresses
SELECT decode(substr(address, 3), 'hex') FROM payments WHERE chain = $1;

-- name: watched_addresses_since
SELECT decode(substr(address, 3), 'hex') FROM payments
WHERE chain = $1 AND created_xid >= $2::text::xid8;
