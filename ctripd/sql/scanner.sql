-- name: watch_snapshot
-- The oldest transaction the current snapshot could not see: every payment row this snapshot
-- misses was written by a transaction at or after it. Run first in a REPEATABLE READ transaction.
SELECT pg_snapshot_xmin(pg_current_snapshot())::text;

-- name: watched_addresses
-- Every payment's address, whatever its chain (payers do send on the wrong network, and a deposit
-- address is the same on every EVM chain), as 65,536 buckets by its first two bytes, each the
-- other 18 bytes of its addresses back to back: the set's own layout (ctripd.chain.addresses),
-- built here so that ten million addresses cross as 65,536 rows, not ten million.
-- $1 (`scanner.watch_after_sweep_days`; NULL: forever): a confirmed payment whose every confirmed
-- unit has been swept leaves the set this many days after its last confirmed sweep (one covered
-- without a sweep, as dust, stays).
SELECT get_byte(a, 0) * 256 + get_byte(a, 1), string_agg(substr(a, 3), ''::bytea)
FROM (
    SELECT decode(substr(p.address, 3), 'hex') AS a
    FROM payments p
    WHERE $1::int IS NULL
       OR NOT (p.status = 'confirmed' AND p.amount_confirmed <= p.sweep_covered
               AND coalesce((SELECT max(s.confirmed_at)
                             FROM sweep_payments sp JOIN sweeps s ON s.id = sp.sweep_id
                             WHERE sp.payment_id = p.id AND s.status = 'confirmed'),
                            'infinity') < now() - make_interval(days => $1::int))
) AS w
GROUP BY 1;

-- name: watched_addresses_since
SELECT decode(substr(address, 3), 'hex') FROM payments WHERE created_xid >= $1::text::xid8;
