-- name: checkout_payment
-- What the payer's page shows, and nothing else: no merchant, order_id or metadata.
-- newest_block: the latest live transfer in the payment's own asset, whose confirmations
-- (counted to the last scanned block, as the watcher counts them) the payer waits for.
SELECT p.id, p.chain, p.chain_id, p.asset, p.token_address, p.decimals, p.amount, p.address,
       p.status, p.amount_received, p.paid_late, p.confirmations_required, p.expires_at,
       p.price_amount, p.price_currency, p.price_received, p.price_confirmed,
       p.refund_status,
       c.scanned_block,
       (SELECT max(t.block_number) FROM transfers t
        WHERE t.payment_id = p.id AND t.status = 'live' AND t.chain = p.chain
          AND lower(coalesce(t.token_address, '')) = lower(coalesce(p.token_address, '')))
           AS newest_block
FROM payments p
LEFT JOIN chains c ON c.name = p.chain
WHERE p.id = $1;

-- name: checkout_options
-- The options of payment $1 (priced in fiat) as its page shows them, each with the latest live
-- transfer in it and its chain's last scanned block (for its confirmations).
SELECT o.position, o.chain, o.chain_id, o.asset, o.token_address, o.decimals, o.amount, o.rate,
       o.received, o.confirmed, o.confirmations_required, c.scanned_block,
       (SELECT max(t.block_number) FROM transfers t
        WHERE t.payment_id = o.payment_id AND t.status = 'live' AND t.chain = o.chain
          AND lower(coalesce(t.token_address, '')) = lower(coalesce(o.token_address, '')))
           AS newest_block
FROM payment_options o
LEFT JOIN chains c ON c.name = o.chain
WHERE o.payment_id = $1
ORDER BY o.position;
