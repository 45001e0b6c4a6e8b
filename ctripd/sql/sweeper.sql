-- name: try_run_lock
-- One sweeper per chain at a time, across processes; released at unlock or session end.
SELECT pg_try_advisory_lock(hashtextextended($1, 0));

-- name: run_unlock
SELECT pg_advisory_unlock(hashtextextended($1, 0));

-- name: nonce_lock
-- Serializes nonce allocation per sending address until the transaction ends.
SELECT pg_advisory_xact_lock(hashtextextended($1, 0));

-- name: due_payments
-- Confirmed payments' assets (`payment_assets`: a payment in asset units, or each quoted option
-- of one priced in fiat) on chain $1 whose confirmed amount is not yet covered by a sweep (or a
-- dust check), with no sweep of the payment in flight or refused by the signing policy (a
-- tampered row: the operator looks first), outside the back-off after failed sweeps (or failed
-- batch entries) (1 minute doubling per failure, at most 512 minutes) and after a deferral.
-- $2 = now, $3 = limit. `position`: the option (NULL: the payment's own asset). Token assets
-- come before native coin at an address: a token sweep may pay its gas with accepted coin there.
-- `treasury`: the merchant's own on this chain (NULL: the chain's), used only while the payment's
-- binding to its merchant and the treasury's approval verify (jobs.policy.treasury_of).
SELECT p.id, a.position, p.merchant, p.chain, p.address, p.address_index, p.merchant_binding,
       a.token_address, a.asset, a.decimals, a.confirmed AS amount_confirmed,
       mt.address AS treasury, mt.approval,
       (SELECT max(t.block_number) FROM transfers t
        WHERE t.payment_id = p.id AND t.status = 'live' AND t.chain = $1) AS last_block
FROM payment_assets a
JOIN payments p ON p.id = a.payment_id
LEFT JOIN merchant_treasuries mt ON mt.merchant = p.merchant AND mt.chain = $1
WHERE a.chain = $1 AND a.status = 'confirmed' AND a.confirmed > a.sweep_covered
  AND (p.sweep_not_before IS NULL OR p.sweep_not_before <= $2)
  AND NOT EXISTS (
      SELECT 1 FROM sweep_payments sp JOIN sweeps s ON s.id = sp.sweep_id
      WHERE sp.payment_id = p.id AND s.status IN ('signed', 'broadcast', 'refused'))
  -- Funds an open refund takes from this deposit address are its own (see jobs.outgoing).
  AND NOT EXISTS (
      SELECT 1 FROM refunds r JOIN payments q ON q.id = r.payment_id
      WHERE q.chain = p.chain AND q.address = p.address
        AND (r.status = 'requested' OR (r.status = 'signed' AND r.source = 'deposit')))
  AND COALESCE((
      SELECT max(s.updated_at) + interval '1 minute' * 2 ^ least(count(*) - 1, 9)
      FROM sweep_payments sp JOIN sweeps s ON s.id = sp.sweep_id
      WHERE sp.payment_id = p.id
        AND (s.status = 'failed'
             OR EXISTS (SELECT 1 FROM sweep_entries e
                        WHERE e.sweep_id = s.id AND e.address = p.address
                          AND e.status = 'failed'))), '-infinity') <= $2
ORDER BY p.address, a.token_address IS NULL, p.id, a.position
LIMIT $3;

-- name: mark_dust
-- Nothing worth sweeping now of payment $1's asset (option $2; NULL: its own): wait until more
-- funds are confirmed.
WITH o AS (
    UPDATE payment_options SET sweep_covered = GREATEST(sweep_covered, $3)
    WHERE payment_id = $1 AND position = $2
)
UPDATE payments SET sweep_covered = GREATEST(sweep_covered, $3)
WHERE id = $1 AND $2::integer IS NULL;

-- name: defer_sweep
-- Plan these payments' sweeps again no sooner than $2.
UPDATE payments SET sweep_not_before = $2 WHERE id = ANY($1::text[]);

-- name: max_nonce
SELECT max(nonce) FROM sweeps WHERE chain = $1 AND from_address = $2;

-- name: insert_sweep
INSERT INTO sweeps (chain, kind, from_address, from_index, to_address, token_address, amount,
                    nonce, gas_limit, max_fee_per_gas, max_priority_fee, gas_price, raw_tx,
                    tx_hash, status, signed_at, created_at, updated_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, 'signed', $15, $15, $15)
RETURNING id;

-- name: insert_version
INSERT INTO sweep_txs (sweep_id, tx_hash, raw_tx, amount, max_fee_per_gas, max_priority_fee,
                       gas_price, signed_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8);

-- name: link_payment
INSERT INTO sweep_payments (sweep_id, payment_id, covered, position) VALUES ($1, $2, $3, $4);

-- name: unfinished
SELECT * FROM sweeps
WHERE chain = $1 AND status IN ('signed', 'broadcast')
  AND (next_try_at IS NULL OR next_try_at <= $2)
ORDER BY id;

-- name: sweeps_by_id
SELECT * FROM sweeps WHERE id = ANY($1::bigint[]) ORDER BY id;

-- name: versions
SELECT * FROM sweep_txs WHERE sweep_id = ANY($1::bigint[]) ORDER BY sweep_id, id;

-- name: payments_of_sweep
SELECT payment_id, position FROM sweep_payments WHERE sweep_id = $1 ORDER BY payment_id;

-- name: unfinished_topup_to
SELECT EXISTS (
    SELECT 1 FROM sweeps
    WHERE chain = $1 AND kind = 'gas_topup' AND to_address = $2
      AND status IN ('signed', 'broadcast'));

-- name: mark_broadcast
UPDATE sweeps
SET status = 'broadcast', broadcast_at = COALESCE(broadcast_at, $2), updated_at = $2,
    attempts = 0, next_try_at = NULL, error = NULL
WHERE id = $1 AND status IN ('signed', 'broadcast');

-- name: retry_later
UPDATE sweeps SET attempts = attempts + 1, next_try_at = $2, error = $3, updated_at = $4
WHERE id = $1 AND status IN ('signed', 'broadcast');

-- name: replace_current
-- A new version with the same nonce becomes current; it is sent next.
UPDATE sweeps
SET status = 'signed', raw_tx = $2, tx_hash = $3, amount = $4, max_fee_per_gas = $5,
    max_priority_fee = $6, gas_price = $7, signed_at = $8, updated_at = $8, attempts = 0,
    next_try_at = NULL, error = NULL
WHERE id = $1 AND status IN ('signed', 'broadcast');

-- name: finish_mined
-- The version that was mined becomes the row's transaction, with its receipt.
UPDATE sweeps s
SET status = $3, tx_hash = v.tx_hash, raw_tx = v.raw_tx, amount = v.amount,
    max_fee_per_gas = v.max_fee_per_gas, max_priority_fee = v.max_priority_fee,
    gas_price = v.gas_price, block_number = $4, gas_used = $5::bigint, effective_gas_price = $6,
    fee = $5::bigint::numeric * $6, error = $7,
    confirmed_at = CASE WHEN $3 = 'confirmed' THEN $8::timestamptz END, updated_at = $8
FROM sweep_txs v
WHERE s.id = $1 AND v.id = $2 AND v.sweep_id = s.id AND s.status IN ('signed', 'broadcast')
RETURNING s.*;

-- name: fail_unmined
UPDATE sweeps SET status = 'failed', error = $2, updated_at = $3
WHERE id = $1 AND status IN ('signed', 'broadcast');

-- name: cover_payments
-- The payments' assets swept by sweep $1 (an option of a payment priced in fiat, or the
-- payment's own asset): covered as linked.
WITH o AS (
    UPDATE payment_options o SET sweep_covered = GREATEST(o.sweep_covered, sp.covered)
    FROM sweep_payments sp
    WHERE sp.sweep_id = $1 AND o.payment_id = sp.payment_id AND o.position = sp.position
    RETURNING o.payment_id AS id, o.decimals
), p AS (
    UPDATE payments p SET sweep_covered = GREATEST(p.sweep_covered, sp.covered)
    FROM sweep_payments sp
    WHERE sp.sweep_id = $1 AND p.id = sp.payment_id AND sp.position IS NULL
    RETURNING p.id, p.decimals
)
SELECT * FROM o UNION ALL SELECT * FROM p ORDER BY id;

-- name: refuse
UPDATE sweeps SET status = 'refused', error = $2, updated_at = now()
WHERE id = $1 AND status IN ('signed', 'broadcast');

-- name: change_due
-- Deposit addresses whose token sweep is confirmed and whose native change was not looked at
-- since, with nothing in flight from or to them and no payment of theirs still due.
-- `change` is what top-ups brought and sweeps did not spend: the most that may go back (other
-- native coin there, such as a payer's wrong-asset transfer, is held, not change).
SELECT DISTINCT s.from_address AS address, s.from_index AS index,
       (SELECT COALESCE(sum(t.amount), 0) FROM sweeps t
        WHERE t.chain = s.chain AND t.kind = 'gas_topup' AND t.status = 'confirmed'
          AND t.to_address = s.from_address)
       - (SELECT COALESCE(sum(f.fee), 0) FROM sweeps f
          WHERE f.chain = s.chain AND f.from_address = s.from_address AND f.fee IS NOT NULL)
       - (SELECT COALESCE(sum(n.amount), 0) FROM sweeps n
          WHERE n.chain = s.chain AND n.kind = 'native' AND n.status = 'confirmed'
            AND n.from_address = s.from_address) AS change
FROM sweeps s
WHERE s.chain = $1 AND s.kind = 'token' AND s.status = 'confirmed' AND NOT s.change_checked
  AND NOT EXISTS (
      SELECT 1 FROM sweeps o
      WHERE o.chain = s.chain AND o.status IN ('signed', 'broadcast', 'refused')
        AND (o.from_address = s.from_address OR o.to_address = s.from_address))
  AND NOT EXISTS (
      SELECT 1 FROM payments p JOIN payment_assets a ON a.payment_id = p.id
      WHERE lower(p.address) = lower(s.from_address) AND a.chain = s.chain
        AND a.status = 'confirmed' AND a.confirmed > a.sweep_covered)
LIMIT $2;

-- name: change_checked
UPDATE sweeps SET change_checked = true
WHERE chain = $1 AND from_address = ANY($2::text[]) AND kind = 'token' AND status = 'confirmed';

-- name: sender_state
-- Whether address $2 ever sent a sweep on chain $1, and whether one is unfinished.
SELECT EXISTS (SELECT 1 FROM sweeps WHERE chain = $1 AND from_address = $2) AS used,
       EXISTS (SELECT 1 FROM sweeps WHERE chain = $1 AND from_address = $2
               AND status IN ('signed', 'broadcast', 'refused')) AS unfinished;

-- name: link_recovery
UPDATE recoveries SET sweep_id = $2, updated_at = now() WHERE id = $1;

-- name: recovery_of_sweep
SELECT * FROM recoveries WHERE sweep_id = $1;

-- name: finish_recovery
-- The recovery carried out by sweep $1 ends with it: done when confirmed, else failed.
UPDATE recoveries
SET status = CASE WHEN $2 = 'confirmed' THEN 'done' ELSE 'failed' END, error = $3,
    updated_at = now()
WHERE sweep_id = $1 AND status = 'approved';

-- name: fail_recovery
UPDATE recoveries SET status = 'failed', error = $2, updated_at = now()
WHERE id = $1 AND status = 'approved';

-- name: due_recoveries
-- Approved recoveries of chain $1 with no sweep of theirs yet, and whether a gas top-up to
-- their address is in flight.
SELECT r.id, r.payment_id, r.token_address, r.to_address, r.amount, p.address, p.address_index,
       EXISTS (SELECT 1 FROM sweeps s
               WHERE s.chain = r.chain AND s.kind = 'gas_topup' AND s.to_address = p.address
                 AND s.status IN ('signed', 'broadcast')) AS topup_in_flight
FROM recoveries r JOIN payments p ON p.id = r.payment_id
WHERE r.chain = $1 AND r.status = 'approved' AND r.sweep_id IS NULL
  AND NOT EXISTS (SELECT 1 FROM sweeps s
                  WHERE s.chain = r.chain AND s.from_address = p.address
                    AND s.status IN ('signed', 'broadcast'))
ORDER BY r.id
LIMIT 50;

-- name: insert_entry
INSERT INTO sweep_entries (sweep_id, address, address_index, token_address, amount, auth_nonce)
VALUES ($1, $2, $3, $4, $5, $6);

-- name: entries
SELECT * FROM sweep_entries WHERE sweep_id = $1 ORDER BY address;

-- name: finish_entry
UPDATE sweep_entries SET status = $3, moved = $4 WHERE sweep_id = $1 AND address = $2;

-- name: fail_entries
UPDATE sweep_entries SET status = 'failed' WHERE sweep_id = $1 AND status = 'pending';

-- name: cover_entry_payments
-- The payments' assets at a swept entry's deposit of batch $1 (an option of a payment priced
-- in fiat, or the payment's own asset): covered as linked, plus, in the entry's asset, what it
-- moved beyond the balance planned at the safe block. The delegate moves the whole balance:
-- funds that arrived after that block left with the rest, and once they confirm the payment is
-- covered by this batch (they never look missing, nor like dust).
WITH swept AS (
    SELECT sp.payment_id, sp.position, p.address, p.decimals, e.token_address, e.moved,
           sp.covered + CASE
               WHEN lower(e.token_address) IS NOT DISTINCT FROM lower(
                   CASE WHEN sp.position IS NULL THEN p.token_address ELSE po.token_address END)
               THEN e.moved - e.amount ELSE 0 END AS covered
    FROM sweep_payments sp
    JOIN payments p ON p.id = sp.payment_id
    JOIN sweep_entries e ON e.sweep_id = sp.sweep_id AND e.address = p.address
    LEFT JOIN payment_options po ON po.payment_id = sp.payment_id AND po.position = sp.position
    WHERE sp.sweep_id = $1 AND e.status = 'swept'
), linked AS (
    UPDATE sweep_payments sp SET covered = w.covered
    FROM swept w
    WHERE sp.sweep_id = $1 AND sp.payment_id = w.payment_id
      AND sp.position IS NOT DISTINCT FROM w.position
), o AS (
    UPDATE payment_options o SET sweep_covered = GREATEST(o.sweep_covered, w.covered)
    FROM swept w
    WHERE o.payment_id = w.payment_id AND o.position = w.position
    RETURNING o.payment_id, o.position, o.decimals
), p AS (
    UPDATE payments p SET sweep_covered = GREATEST(p.sweep_covered, w.covered)
    FROM swept w
    WHERE p.id = w.payment_id AND w.position IS NULL
)
SELECT w.payment_id AS id, coalesce(o.decimals, w.decimals) AS decimals, w.address,
       w.token_address, w.moved
FROM swept w LEFT JOIN o ON o.payment_id = w.payment_id AND o.position = w.position
ORDER BY w.payment_id;

-- name: delegate
-- The sweep delegate of treasury $2 on chain $1, and the state of the sweep deploying it
-- (NULL: configured).
SELECT d.address, d.sweep_id, s.status AS deploy_status
FROM sweep_delegates d LEFT JOIN sweeps s ON s.id = d.sweep_id
WHERE d.chain = $1 AND d.treasury = $2;

-- name: delegate_treasury
SELECT treasury FROM sweep_delegates WHERE chain = $1 AND lower(address) = lower($2);

-- name: deployed_delegate
SELECT address FROM sweep_delegates WHERE sweep_id = $1;

-- name: configure_delegate
-- The configured delegate of the chain's treasury.
INSERT INTO sweep_delegates (chain, treasury, address) VALUES ($1, $2, $3)
ON CONFLICT (chain, treasury) DO UPDATE SET address = EXCLUDED.address, sweep_id = NULL
WHERE sweep_delegates.address <> EXCLUDED.address;

-- name: record_delegate
-- The delegate a `deploy` sweep creates, recorded with it before it is sent.
INSERT INTO sweep_delegates (chain, treasury, address, sweep_id) VALUES ($1, $2, $3, $4);

-- name: forget_delegate
-- A deployment that failed: the next round deploys again.
DELETE FROM sweep_delegates WHERE sweep_id = $1;
