-- name: lock_payment
-- The payment, locked for the refund request's transaction: refunds of it are decided in turn.
SELECT * FROM payments WHERE id = $1 FOR UPDATE;

-- name: figures
-- Payment $1's confirmed live receipts on its chain per asset (token NULL: native), with what
-- refunds not failed (but refund $2) and recoveries approved or done already take of each.
WITH received AS (
    SELECT lower(t.token_address) AS token, sum(t.amount) AS amount
    FROM transfers t
    JOIN payments p ON p.id = t.payment_id
    JOIN chains c ON c.name = t.chain
    WHERE t.payment_id = $1 AND t.status = 'live' AND t.chain = p.chain
      AND t.block_number <= c.scanned_block - p.confirmations_required + 1
    GROUP BY lower(t.token_address)
), refunded AS (
    SELECT lower(token_address) AS token, sum(amount) AS amount
    FROM refunds
    WHERE payment_id = $1 AND status <> 'failed' AND id <> coalesce($2, -1)
    GROUP BY lower(token_address)
), recovered AS (
    SELECT lower(token_address) AS token, sum(amount) AS amount
    FROM recoveries
    WHERE payment_id = $1 AND status IN ('approved', 'done')
    GROUP BY lower(token_address)
)
SELECT r.token, r.amount AS received, coalesce(f.amount, 0) AS refunded,
       coalesce(v.amount, 0) AS recovered
FROM received r
LEFT JOIN refunded f ON f.token IS NOT DISTINCT FROM r.token
LEFT JOIN recovered v ON v.token IS NOT DISTINCT FROM r.token;

-- name: by_idempotency_key
SELECT public_id, request_hash FROM refunds WHERE merchant = $1 AND idempotency_key = $2;

-- name: payment_of
SELECT id, merchant, chain, asset FROM payments WHERE id = $1;

-- name: is_deposit_address
SELECT EXISTS (SELECT 1 FROM payments WHERE lower(address) = lower($1));

-- name: insert_refund
INSERT INTO refunds (public_id, payment_id, merchant, chain, asset, decimals, token_address,
                     to_address, amount, binding, idempotency_key, request_hash)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
RETURNING id;

-- name: refund_rows
-- Refunds with their payment's asset facts and their sweep's state: by internal id ($1), public
-- id ($2) or payment ($3), for merchant $4 (NULL: any, the operator's CLI), newest last.
SELECT r.*, p.address AS deposit,
       s.status AS sweep_status, s.tx_hash, s.broadcast_at, s.block_number, s.fee,
       s.from_address, s.amount AS amount_sent
FROM refunds r
JOIN payments p ON p.id = r.payment_id
LEFT JOIN sweeps s ON s.id = r.sweep_id
WHERE ($1::bigint IS NULL OR r.id = $1) AND ($2::text IS NULL OR r.public_id = $2)
  AND ($3::text IS NULL OR r.payment_id = $3) AND ($4::text IS NULL OR r.merchant = $4)
ORDER BY r.id
LIMIT $5;

-- name: due
-- Requested refunds of chain $1 with no sweep yet, and whether a transaction from or to their
-- payment's deposit address is in flight (a sweep's or top-up's funds are never signed over).
SELECT r.id, r.public_id, r.payment_id, r.token_address, r.to_address, r.amount,
       p.address, p.address_index,
       EXISTS (SELECT 1 FROM sweeps s
               WHERE s.chain = r.chain AND (s.from_address = p.address OR s.to_address = p.address)
                 AND s.status IN ('signed', 'broadcast')) AS busy
FROM refunds r JOIN payments p ON p.id = r.payment_id
WHERE r.chain = $1 AND r.status = 'requested' AND r.sweep_id IS NULL
ORDER BY r.id
LIMIT 50;

-- name: link
-- The refund is signed: its sweep, committed with it.
UPDATE refunds SET status = 'signed', sweep_id = $2, source = $3, error = NULL, updated_at = now()
WHERE id = $1 AND status = 'requested';

-- name: wait
-- Not signed this round, and why.
UPDATE refunds SET error = $2, updated_at = now() WHERE id = $1 AND status = 'requested';

-- name: finish
-- The refund of sweep $1 ends with it.
UPDATE refunds
SET status = $2, error = $3, updated_at = now(),
    confirmed_at = CASE WHEN $2 = 'confirmed' THEN now() END
WHERE sweep_id = $1 AND status = 'signed'
RETURNING id, payment_id;

-- name: set_refund_status
UPDATE payments SET refund_status = $2 WHERE id = $1 AND refund_status IS DISTINCT FROM $2;

-- name: confirmed_own
-- What confirmed refunds gave back of payment $1 in its own asset.
SELECT coalesce(sum(r.amount), 0)
FROM refunds r JOIN payments p ON p.id = r.payment_id
WHERE r.payment_id = $1 AND r.status = 'confirmed'
  AND lower(coalesce(r.token_address, '')) = lower(coalesce(p.token_address, ''));

-- name: policy_row
SELECT r.*, p.address, p.address_index, p.merchant AS payment_merchant, p.chain AS payment_chain
FROM refunds r JOIN payments p ON p.id = r.payment_id
WHERE r.id = $1;

-- name: of_sweep
SELECT id, amount FROM refunds WHERE sweep_id = $1;
