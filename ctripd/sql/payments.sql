-- name: payment_by_id
SELECT p.*, c.head
FROM payments p LEFT JOIN chains c ON c.name = p.chain
WHERE p.id = $1;

-- name: payments_by_ids
-- As payment_by_id, for several payments at once.
SELECT p.*, c.head
FROM payments p LEFT JOIN chains c ON c.name = p.chain
WHERE p.id = ANY($1::text[]);

-- name: next_address_indexes
SELECT nextval('address_index_seq') AS index FROM generate_series(1, $1);

-- name: insert_payment_with_event
-- One statement, so atomic without BEGIN/COMMIT: the payment, its payment.created event and the
-- event's deliveries. ON CONFLICT on the idempotency key inserts none and returns no row.
WITH p AS (
    INSERT INTO payments (
        id, merchant, chain, chain_id, asset, token_address, decimals, amount, address,
        address_index, confirmations_required, order_id, metadata, idempotency_key,
        request_hash, created_at, expires_at, merchant_binding
    )
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13::text::jsonb, $14, $15, $16, $17,
            $20)
    ON CONFLICT (merchant, idempotency_key) DO NOTHING
    RETURNING id, merchant, created_at
), e AS (
    INSERT INTO events (id, payment_id, merchant, type, payload, created_at)
    SELECT $18, p.id, p.merchant, 'payment.created', $19::text::jsonb, p.created_at FROM p
    RETURNING seq, payment_id, merchant
), d AS (
    INSERT INTO deliveries (id, event_id, event_seq, payment_id, endpoint_id)
    SELECT 'dlv_' || replace(gen_random_uuid()::text, '-', ''), $18, e.seq, e.payment_id,
           t.endpoint_id
    FROM e CROSS JOIN LATERAL event_endpoints(e.merchant, 'payment.created', $21) t
)
SELECT id AS payment_id FROM p;

-- name: payment_by_idempotency_key
SELECT id, request_hash FROM payments WHERE merchant = $1 AND idempotency_key = $2;

-- name: list_payments
-- Newest first; ($5, $6) is the (created_at, id) of the last row of the previous page.
SELECT p.*, c.head
FROM payments p LEFT JOIN chains c ON c.name = p.chain
WHERE p.merchant = $1
  AND ($2::text IS NULL OR p.status = $2)
  AND ($3::text IS NULL OR p.chain = $3)
  AND ($4::text IS NULL OR p.order_id = $4)
  AND ($5::timestamptz IS NULL OR (p.created_at, p.id) < ($5, $6::text))
ORDER BY p.created_at DESC, p.id DESC
LIMIT $7;

-- name: latest_transfers_of_payments
-- The latest $2 transfer rows of each payment $1 (a dust aggregate is one row), newest first,
-- each with the head of the chain it was made on (for its confirmations).
SELECT t.*, c.head
FROM unnest($1::text[]) AS p (id)
CROSS JOIN LATERAL (
    SELECT payment_id, id, chain, tx_hash, kind, log_index, block_number, block_hash,
           from_address, token_address, asset, decimals, amount, transfer_count, status
    FROM transfers
    WHERE payment_id = p.id
    ORDER BY block_number DESC, id DESC
    LIMIT $2
) t
LEFT JOIN chains c ON c.name = t.chain
ORDER BY t.payment_id, t.block_number DESC, t.id DESC;

-- name: transfer_summaries
-- What the transfer summary of payments $1 adds up: rows, transfers and amounts per payment,
-- status, dust or not, chain and asset.
SELECT payment_id, status, kind = 'dust' AS dust, chain, lower(token_address) AS token,
       max(token_address) AS token_address, max(asset) AS asset, max(decimals) AS decimals,
       count(*) AS rows, sum(transfer_count) AS transfers, sum(amount) AS amount
FROM transfers
WHERE payment_id = ANY($1::text[])
GROUP BY payment_id, status, kind = 'dust', chain, lower(token_address);

-- name: transfers_page
-- A page of payment $1's transfer rows, newest first, after the (block, row id) ($2, $3) where
-- the previous page ended.
SELECT t.id, t.chain, t.tx_hash, t.kind, t.log_index, t.block_number, t.block_hash,
       t.from_address, t.token_address, t.asset, t.decimals, t.amount, t.transfer_count,
       t.status, c.head
FROM transfers t
LEFT JOIN chains c ON c.name = t.chain
WHERE t.payment_id = $1 AND ($2::bigint IS NULL OR (t.block_number, t.id) < ($2, $3::bigint))
ORDER BY t.block_number DESC, t.id DESC
LIMIT $4;

-- name: sweeps_of_payments
-- Each payment's latest sweep (gas top-ups aside), someone else's trigger of the delegate booked
-- for it included. Of a batch, the payment's own entry decides: an entry that failed in a
-- confirmed batch is a failed sweep of that payment (swept again later).
SELECT DISTINCT ON (payment_id) payment_id, status, tx_hash FROM (
    SELECT sp.payment_id, CASE WHEN e.status = 'failed' THEN 'failed' ELSE s.status END AS status,
           s.tx_hash, s.created_at, s.id
    FROM sweep_payments sp
    JOIN sweeps s ON s.id = sp.sweep_id
    JOIN payments p ON p.id = sp.payment_id
    LEFT JOIN sweep_entries e ON e.sweep_id = s.id AND e.address = p.address
    WHERE sp.payment_id = ANY($1::text[]) AND s.kind <> 'gas_topup'
    UNION ALL
    SELECT payment_id, 'confirmed', tx_hash, created_at, id
    FROM outside_sweeps WHERE payment_id = ANY($1::text[])) latest
ORDER BY payment_id, created_at DESC, id DESC;

-- name: cancel_payment
-- Only once the payment's chain is scanned past the request's time ($3): a transfer mined before
-- it but not read yet (the scanner behind, its node down) would otherwise land on a payment its
-- payer was told is canceled. The scanner credits and moves caught_up_at in one transaction.
UPDATE payments p SET status = 'canceled', canceled_at = now()
WHERE id = $1 AND merchant = $2 AND status = 'pending'
  AND (SELECT c.caught_up_at FROM chains c WHERE c.name = p.chain) >= $3
  AND NOT EXISTS (
      SELECT 1 FROM payment_options o JOIN chains c ON c.name = o.chain
      WHERE o.payment_id = p.id AND (c.caught_up_at IS NULL OR c.caught_up_at < $3))
RETURNING chain;

-- name: database_now
SELECT now();

-- name: status_of_payment
SELECT status, chain FROM payments WHERE id = $1 AND merchant = $2;

-- name: expire_due
-- Pending payments past their window, once their chain is read past it (caught_up_at: see
-- chains.record_head; no transfer mined in time is still unread); SKIP LOCKED so that concurrent
-- runs (several processes) and a watcher crediting one of them never block or expire a payment
-- twice.
UPDATE payments SET status = 'expired', expired_at = now()
WHERE id IN (
    SELECT id FROM payments
    WHERE status = 'pending' AND expires_at <= now()
      AND expires_at <= (SELECT c.caught_up_at FROM chains c WHERE c.name = payments.chain)
      -- priced in fiat: every chain of its options read past the window too
      AND NOT EXISTS (
          SELECT 1 FROM payment_options o JOIN chains c ON c.name = o.chain
          WHERE o.payment_id = payments.id
            AND (c.caught_up_at IS NULL OR c.caught_up_at < payments.expires_at))
    ORDER BY expires_at
    LIMIT $1
    FOR UPDATE SKIP LOCKED
) AND status = 'pending'
RETURNING id;

-- name: list_all_payments
-- The operator's view: every merchant's payments (or one merchant's), newest first. Kept apart
-- from payments.list_payments so that the API's merchant-scoped plan stays as it is.
SELECT p.*, c.head
FROM payments p LEFT JOIN chains c ON c.name = p.chain
WHERE ($1::text IS NULL OR p.merchant = $1)
  AND ($2::text IS NULL OR p.status = $2)
  AND ($3::text IS NULL OR p.chain = $3)
  AND ($4::text IS NULL OR p.order_id = $4)
ORDER BY p.created_at DESC, p.id DESC
LIMIT $5;
