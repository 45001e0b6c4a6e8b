-- name: merchant_lock
-- Payouts of one merchant are decided in turn (its daily limit).
SELECT pg_advisory_xact_lock(hashtextextended('ctripd.payouts:' || $1, 0));

-- name: by_idempotency_key
SELECT public_id, request_hash FROM payouts WHERE merchant = $1 AND idempotency_key = $2;

-- name: paid_today
-- What merchant $1 paid out (or is paying out) of token $3 (NULL: native) on chain $2 since $4.
SELECT coalesce(sum(amount), 0) FROM payouts
WHERE merchant = $1 AND chain = $2
  AND lower(coalesce(token_address, '')) = lower(coalesce($3::text, ''))
  AND status NOT IN ('failed', 'rejected') AND created_at > $4;

-- name: insert_payout
INSERT INTO payouts (public_id, merchant, chain, asset, decimals, token_address, to_address,
                     amount, reference, binding, status, idempotency_key, request_hash)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
RETURNING id;

-- name: payout_rows
-- Payouts with their sweep's state: by internal id ($1), public id ($2), merchant ($3, NULL:
-- any), status as shown ($4: `broadcast` is a signed one sent), newest first, after the one
-- with public id $5.
SELECT o.*, s.status AS sweep_status, s.tx_hash, s.broadcast_at, s.block_number, s.fee,
       s.from_address
FROM payouts o LEFT JOIN sweeps s ON s.id = o.sweep_id
WHERE ($1::bigint IS NULL OR o.id = $1) AND ($2::text IS NULL OR o.public_id = $2)
  AND ($3::text IS NULL OR o.merchant = $3)
  AND ($4::text IS NULL OR $4 = CASE WHEN o.status = 'signed' AND s.broadcast_at IS NOT NULL
                                     THEN 'broadcast' ELSE o.status END)
  AND ($5::text IS NULL OR o.id < (SELECT c.id FROM payouts c WHERE c.public_id = $5))
ORDER BY o.id DESC
LIMIT $6;

-- name: approve
UPDATE payouts SET status = 'pending', approval = $2, approved_at = now(), updated_at = now()
WHERE id = $1 AND status = 'pending_approval'
RETURNING id;

-- name: reject
UPDATE payouts SET status = 'rejected', reason = $2, updated_at = now()
WHERE id = $1 AND status = 'pending_approval'
RETURNING id;

-- name: due
-- Pending payouts of chain $1 with no sweep yet.
SELECT * FROM payouts
WHERE chain = $1 AND status = 'pending' AND sweep_id IS NULL
ORDER BY id
LIMIT 50;

-- name: link
UPDATE payouts SET status = 'signed', sweep_id = $2, reason = NULL, updated_at = now()
WHERE id = $1 AND status = 'pending';

-- name: wait
UPDATE payouts SET reason = $2, updated_at = now() WHERE id = $1 AND status = 'pending';

-- name: finish
UPDATE payouts
SET status = $2, reason = $3, updated_at = now(),
    confirmed_at = CASE WHEN $2 = 'confirmed' THEN now() END
WHERE sweep_id = $1 AND status = 'signed'
RETURNING id;

-- name: policy_row
SELECT * FROM payouts WHERE id = $1;

-- name: insert_event
-- A payout's event: no payment; its deliveries carry the payout's id where a payment's go, so
-- that one payout's events reach each endpoint in order (see insert_event in events.sql).
WITH e AS (
    INSERT INTO events (id, payment_id, merchant, type, payload, created_at)
    VALUES ($1, NULL, $3, $4, $5, $6)
    RETURNING seq
)
INSERT INTO deliveries (id, event_id, event_seq, payment_id, endpoint_id)
SELECT 'dlv_' || replace(gen_random_uuid()::text, '-', ''), $1, e.seq, $2, t.endpoint_id
FROM e CROSS JOIN event_endpoints($3, $4, $7) t;

-- name: wallet_in_flight
-- What unfinished transactions of address $2 on chain $1 may still spend, per asset: the
-- amounts they send and, in native coin, the most their fees may be.
SELECT lower(token_address) AS token, sum(amount) AS amount,
       sum(gas_limit * coalesce(max_fee_per_gas, gas_price)) AS fees
FROM sweeps
WHERE chain = $1 AND from_address = $2 AND status IN ('signed', 'broadcast')
GROUP BY lower(token_address);

-- name: of_sweep
SELECT id, amount FROM payouts WHERE sweep_id = $1;
