-- name: watch_snapshot
-- The oldest transaction the current snapshot could not see: every payment row this snapshot
-- misses was written by a transaction at or after it. Run first in a REPEATABLE READ transaction.
SELECT pg_snapshot_xmin(pg_current_snapshot())::text;

-- name: watched_addresses
-- Every payment's address, whatever its chain: payers do send on the wrong network, and a deposit
-- address is the same on every EVM chain.
SELECT decode(substr(address, 3), 'hex') FROM payments;

-- name: watched_addresses_since
SELECT decode(substr(address, 3), 'hex') FROM payments WHERE created_xid >= $1::text::xid8;
