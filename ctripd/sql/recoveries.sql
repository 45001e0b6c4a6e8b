-- name: held_of_payments
-- The held funds of payments $1 on chain $4 (NULL: their own chain), together, per asset (token
-- NULL: native): their confirmed live transfers in an asset they do not count there
-- (`payment_assets`), or all of them once expired or canceled, less what recoveries in the
-- states $3 took or are taking (but recovery $2) and what refunds took or are taking.
WITH received AS (
    SELECT lower(t.token_address) AS token, sum(t.amount) AS amount
    FROM transfers t
    JOIN payments p ON p.id = t.payment_id
    JOIN chains c ON c.name = t.chain
    WHERE t.payment_id = ANY($1::text[]) AND t.status = 'live'
      AND t.chain = coalesce($4::text, p.chain)
      AND t.block_number <= c.scanned_block - p.confirmations_required + 1
      AND (p.status IN ('expired', 'canceled')
           OR NOT EXISTS (
               SELECT 1 FROM payment_assets a
               WHERE a.payment_id = p.id AND a.chain = t.chain
                 AND lower(coalesce(a.token_address, ''))
                     = lower(coalesce(t.token_address, ''))))
    GROUP BY lower(t.token_address)
), taken AS (
    SELECT lower(token_address) AS token, sum(amount) AS amount FROM (
        SELECT token_address, amount
        FROM recoveries
        WHERE payment_id = ANY($1::text[]) AND status = ANY($3::text[])
          AND id <> coalesce($2, -1)
        UNION ALL
        -- Refunds count as the recoveries they resemble: open ones as approved, confirmed
        -- ones as done.
        SELECT token_address, amount
        FROM refunds
        WHERE payment_id = ANY($1::text[])
          AND (CASE WHEN status = 'confirmed' THEN 'done'
                    WHEN status IN ('requested', 'signed') THEN 'approved' END) = ANY($3::text[])
    ) t
    GROUP BY lower(token_address)
)
SELECT r.token, r.amount - coalesce(k.amount, 0) AS amount
FROM received r LEFT JOIN taken k ON k.token IS NOT DISTINCT FROM r.token
ORDER BY r.token NULLS FIRST;

-- name: insert_recovery
INSERT INTO recoveries (chain, payment_id, token_address, to_address, amount, approval)
VALUES ($1, $2, $3, $4, $5, $6)
RETURNING id;

-- name: recoveries_of_chain
SELECT r.*, p.address, p.address_index
FROM recoveries r JOIN payments p ON p.id = r.payment_id
WHERE r.chain = $1
ORDER BY r.id;
