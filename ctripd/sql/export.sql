-- name: export_payments
-- Payments created in [$2, $3) (of merchant $1, or every merchant), oldest first, with their
-- confirmed sweep transactions and the fees of every transaction sent for them (top-ups too).
SELECT p.*,
       (SELECT string_agg(s.tx_hash, ';' ORDER BY s.id)
        FROM sweep_payments sp JOIN sweeps s ON s.id = sp.sweep_id
        WHERE sp.payment_id = p.id AND s.kind <> 'gas_topup' AND s.status = 'confirmed')
           AS sweep_txs,
       (SELECT sum(s.fee)
        FROM sweep_payments sp JOIN sweeps s ON s.id = sp.sweep_id
        WHERE sp.payment_id = p.id AND s.fee IS NOT NULL) AS sweep_fees
FROM payments p
WHERE ($1::text IS NULL OR p.merchant = $1) AND p.created_at >= $2 AND p.created_at < $3
ORDER BY p.created_at, p.id;

-- name: export_transfers
-- The transfer rows of those payments, each with the locked rate of its option (priced in fiat).
SELECT t.payment_id, t.chain, t.tx_hash, t.kind, t.log_index, t.block_number, t.from_address,
       t.token_address, t.asset, t.decimals, t.amount, t.transfer_count, t.status, p.merchant,
       p.order_id, p.price_currency, o.rate AS locked_rate
FROM payments p
JOIN transfers t ON t.payment_id = p.id
LEFT JOIN payment_options o
       ON o.payment_id = p.id AND o.chain = t.chain AND o.rate IS NOT NULL
      AND lower(coalesce(o.token_address, '')) = lower(coalesce(t.token_address, ''))
WHERE ($1::text IS NULL OR p.merchant = $1) AND p.created_at >= $2 AND p.created_at < $3
ORDER BY p.created_at, p.id, t.block_number, t.id;
