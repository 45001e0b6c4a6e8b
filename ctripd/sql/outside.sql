-- name: owed
-- What payment $1 still needs swept (its confirmed amount not covered), and its first live
-- transfer's block on its chain in its own asset: no earlier sweep can have moved its funds.
SELECT p.amount_confirmed - p.sweep_covered AS uncovered, p.decimals,
       (SELECT min(t.block_number) FROM transfers t
        WHERE t.payment_id = p.id AND t.chain = p.chain AND t.status = 'live'
          AND lower(t.token_address) IS NOT DISTINCT FROM lower(p.token_address)) AS first_block
FROM payments p WHERE p.id = $1;

-- name: own_txs
-- Which of the transactions $2 are versions of ctripd's own sweeps on chain $1.
SELECT lower(v.tx_hash) AS tx_hash
FROM sweep_txs v JOIN sweeps s ON s.id = v.sweep_id
WHERE s.chain = $1 AND lower(v.tx_hash) = ANY($2::text[]);

-- name: book
-- One `Swept` log of someone else's transaction, once; NULL when it was booked before.
INSERT INTO outside_sweeps (chain, tx_hash, log_index, block_number, address, token_address,
                            treasury, amount, payment_id, created_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
ON CONFLICT (chain, tx_hash, log_index) DO NOTHING
RETURNING *;

-- name: cover
-- The booked amount covers payment $1's confirmed funds not yet covered (never beyond them:
-- covered dust that was still at the deposit left with the rest).
UPDATE payments
SET sweep_covered = GREATEST(sweep_covered, LEAST(amount_confirmed, sweep_covered + $2))
WHERE id = $1
RETURNING amount_confirmed <= sweep_covered AS covered;
