-- name: insert_fiat_payment_with_event
-- payments.insert_payment_with_event for a payment priced in fiat: the payment with its price,
-- its options ($24… one array per column, in position order) and its payment.created event in
-- one statement; ON CONFLICT on the idempotency key inserts none of them and returns no row.
WITH p AS (
    INSERT INTO payments (
        id, merchant, chain, chain_id, asset, token_address, decimals, amount, address,
        address_index, confirmations_required, order_id, metadata, idempotency_key,
        request_hash, created_at, expires_at, merchant_binding, price_amount, price_currency,
        price_received, price_confirmed
    )
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13::text::jsonb, $14, $15, $16, $17,
            $20, $22, $23, 0, 0)
    ON CONFLICT (merchant, idempotency_key) DO NOTHING
    RETURNING id, merchant, created_at
), o AS (
    INSERT INTO payment_options (
        payment_id, position, chain, chain_id, asset, token_address, decimals,
        confirmations_required, amount, rate, sources, fetched_at, unavailable
    )
    SELECT p.id, u.ord - 1, u.chain, u.chain_id, u.asset, u.token_address, u.decimals,
           u.confirmations, u.amount, u.rate, u.sources::jsonb, u.fetched_at, u.unavailable
    FROM p CROSS JOIN unnest($24::text[], $25::bigint[], $26::text[], $27::text[], $28::int[],
                             $29::int[], $30::numeric[], $31::numeric[], $32::text[],
                             $33::timestamptz[], $34::text[])
        WITH ORDINALITY AS u (chain, chain_id, asset, token_address, decimals, confirmations,
                              amount, rate, sources, fetched_at, unavailable, ord)
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

-- name: options_of_payments
SELECT * FROM payment_options WHERE payment_id = ANY($1::text[]) ORDER BY payment_id, position;

-- name: option_sums
-- Received and confirmed base units of each quoted option of payments $1: live transfers on
-- the option's chain in its asset. Confirmations count up to $3 on chain $2 (the block range
-- being credited) and up to each other chain's committed cursor.
SELECT o.payment_id, o.position, o.chain, o.token_address, o.decimals, o.rate,
       coalesce(sum(t.amount), 0) AS received,
       coalesce(sum(t.amount) FILTER (
           WHERE t.block_number <= CASE WHEN o.chain = $2 THEN $3 ELSE c.scanned_block END
                                   - o.confirmations_required + 1), 0) AS confirmed
FROM payment_options o
LEFT JOIN chains c ON c.name = o.chain
LEFT JOIN transfers t
       ON t.payment_id = o.payment_id AND t.status = 'live' AND t.chain = o.chain
      AND lower(coalesce(t.token_address, '')) = lower(coalesce(o.token_address, ''))
WHERE o.payment_id = ANY($1::text[]) AND o.rate IS NOT NULL
GROUP BY o.payment_id, o.position, o.chain, o.token_address, o.decimals, o.rate, c.scanned_block
ORDER BY o.payment_id, o.position;

-- name: update_option_sums
UPDATE payment_options o SET received = u.received, confirmed = u.confirmed
FROM unnest($1::text[], $2::int[], $3::numeric[], $4::numeric[])
     AS u (payment_id, position, received, confirmed)
WHERE o.payment_id = u.payment_id AND o.position = u.position
  AND (o.received, o.confirmed) IS DISTINCT FROM (u.received, u.confirmed);

-- name: update_fiat_payments
UPDATE payments p
SET amount_received = u.received, amount_confirmed = u.confirmed, status = u.status,
    paid_late = u.paid_late, detected_at = u.detected_at, confirmed_at = u.confirmed_at,
    price_received = u.price_received, price_confirmed = u.price_confirmed
FROM unnest($1::text[], $2::numeric[], $3::numeric[], $4::text[], $5::boolean[],
            $6::timestamptz[], $7::timestamptz[], $8::numeric[], $9::numeric[])
     AS u (id, received, confirmed, status, paid_late, detected_at, confirmed_at,
           price_received, price_confirmed)
WHERE p.id = u.id;
