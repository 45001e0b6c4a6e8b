-- name: payment_by_id
SELECT p.*, c.head
FROM payments p LEFT JOIN chains c ON c.name = p.chain
WHERE p.id = $1;

-- name: transfers_of_payment
SELECT tx_hash, kind, log_index, block_number, block_hash, from_address, token_address,
       amount, status, created_at
FROM transfers
WHERE payment_id = $1
ORDER BY block_number, tx_hash, log_index;

-- name: sweep_of_payment
SELECT s.status, s.tx_hash
FROM sweep_payments sp JOIN sweeps s ON s.id = sp.sweep_id
WHERE sp.payment_id = $1 AND s.kind <> 'gas_topup'
ORDER BY s.id DESC
LIMIT 1;
