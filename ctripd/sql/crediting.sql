-- name: lock_payments_for_step
-- Payments receiving transfers now (of any chain: funds sent on the wrong network are recorded
-- with their payment), and this chain's payments whose amounts still wait for confirmations;
-- locked in id order so concurrent writers (cancel, expiry, other chains' scanners) never
-- deadlock with the scanner.
-- `id || ''` sorts exactly as `id` but cannot be read off the primary key: Postgres has no
-- statistics for `amount_confirmed < amount_received` and guesses a third of the table, so
-- ordering by `id` could make it walk every payment in key order rather than sort the few its
-- indexes find (3 s a step at 1,000,000 payments, for certain with random_page_cost = 1.1).
-- A payment priced in fiat also waits for confirmations on each chain of its options: those
-- ids come as an array (computed once), so each of the three conditions is read off an index;
-- as `id IN (subquery)` the options could only filter a scan of every payment (seconds a step
-- at millions of payments).
SELECT * FROM payments
WHERE lower(address) = ANY($2::text[])
   OR (chain = $1 AND (status = 'detected' OR amount_confirmed < amount_received))
   OR id = ANY(ARRAY(SELECT payment_id FROM payment_options
                     WHERE chain = $1 AND confirmed < received))
ORDER BY id || ''
FOR UPDATE;

-- name: lock_payments_by_id
SELECT * FROM payments WHERE id = ANY($1::text[]) ORDER BY id FOR UPDATE;

-- name: own_sweep_txs
-- Our own transactions (any signed version of a sweep), such as gas top-ups of deposit addresses.
SELECT v.tx_hash FROM sweep_txs v JOIN sweeps s ON s.id = v.sweep_id
WHERE s.chain = $1 AND v.tx_hash = ANY($2::text[]);

-- name: upsert_transfers
-- New transfers are inserted; one a reorg orphaned and the chain included again (maybe in
-- another block) comes back to life with its new block. Live rows are left alone. Returns the
-- rows that became live. asset/decimals are the transfer's own asset (a revived row recorded
-- before migration 0006 gets them now).
INSERT INTO transfers AS t
    (chain, tx_hash, kind, log_index, payment_id, token_address, from_address, to_address,
     amount, block_number, block_hash, asset, decimals)
SELECT $1, * FROM unnest($2::text[], $3::text[], $4::int[], $5::text[], $6::text[], $7::text[],
                         $8::text[], $9::numeric[], $10::bigint[], $11::text[], $12::text[],
                         $13::int[])
ON CONFLICT (chain, tx_hash, kind, log_index) WHERE kind <> 'dust' DO UPDATE
SET block_number = EXCLUDED.block_number,
    block_hash = EXCLUDED.block_hash,
    status = 'live',
    orphaned_at = NULL,
    asset = coalesce(t.asset, EXCLUDED.asset),
    decimals = coalesce(t.decimals, EXCLUDED.decimals)
WHERE t.status = 'orphaned'
RETURNING t.*;

-- name: upsert_dust
-- One aggregate per (block, payment, asset) of the transfers below their asset's min_credit,
-- named by the last of them. A block's content is fixed by its hash, so an aggregate orphaned
-- by a reorg and read again in the same block comes back as it was; live ones are left alone.
INSERT INTO transfers AS t
    (chain, tx_hash, kind, log_index, payment_id, token_address, from_address, to_address,
     amount, block_number, block_hash, asset, decimals, transfer_count)
SELECT $1, u.tx_hash, 'dust', u.log_index, u.payment_id, u.token_address, u.from_address,
       u.to_address, u.amount, u.block_number, u.block_hash, u.asset, u.decimals, u.n
FROM unnest($2::text[], $3::int[], $4::text[], $5::text[], $6::text[], $7::text[],
            $8::numeric[], $9::bigint[], $10::text[], $11::text[], $12::int[], $13::int[])
     AS u (tx_hash, log_index, payment_id, token_address, from_address, to_address, amount,
           block_number, block_hash, asset, decimals, n)
ON CONFLICT (chain, block_hash, payment_id, lower(coalesce(token_address, '')))
    WHERE kind = 'dust' DO UPDATE
SET tx_hash = EXCLUDED.tx_hash,
    log_index = EXCLUDED.log_index,
    from_address = EXCLUDED.from_address,
    amount = EXCLUDED.amount,
    transfer_count = EXCLUDED.transfer_count,
    status = 'live',
    orphaned_at = NULL
WHERE t.status = 'orphaned'
RETURNING t.*;

-- name: payment_sums
-- Received and confirmed sums of the live transfers in each payment's own asset on its own chain;
-- a transfer counts as confirmed with at least confirmations_required blocks up to and including
-- $2.
SELECT p.id,
       coalesce(sum(t.amount), 0) AS received,
       coalesce(sum(t.amount) FILTER (
           WHERE t.block_number <= $2 - p.confirmations_required + 1), 0) AS confirmed
FROM payments p
LEFT JOIN transfers t
       ON t.payment_id = p.id AND t.status = 'live' AND t.chain = p.chain
      AND lower(coalesce(t.token_address, '')) = lower(coalesce(p.token_address, ''))
WHERE p.id = ANY($1::text[])
GROUP BY p.id;

-- name: update_payments
UPDATE payments p
SET amount_received = u.received, amount_confirmed = u.confirmed, status = u.status,
    paid_late = u.paid_late, detected_at = u.detected_at, confirmed_at = u.confirmed_at
FROM unnest($1::text[], $2::numeric[], $3::numeric[], $4::text[], $5::boolean[],
            $6::timestamptz[], $7::timestamptz[])
     AS u (id, received, confirmed, status, paid_late, detected_at, confirmed_at)
WHERE p.id = u.id;

-- name: live_payments_after
SELECT DISTINCT payment_id FROM transfers
WHERE chain = $1 AND block_number > $2 AND status = 'live';

-- name: orphan_transfers_after
UPDATE transfers SET status = 'orphaned', orphaned_at = now()
WHERE chain = $1 AND block_number > $2 AND status = 'live'
RETURNING *;
