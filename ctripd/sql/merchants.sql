-- name: insert_merchant
INSERT INTO merchants (id, name) VALUES ($1, $2)
ON CONFLICT (id) DO NOTHING
RETURNING id, name, created_at, disabled_at;

-- name: list_merchants
-- Each merchant with its count of live API keys.
SELECT m.id, m.name, m.created_at, m.disabled_at,
       (SELECT count(*) FROM api_keys k WHERE k.merchant = m.id AND k.revoked_at IS NULL) AS keys
FROM merchants m
WHERE $1::text IS NULL OR m.id = $1
ORDER BY m.created_at, m.id;

-- name: disable_merchant
UPDATE merchants SET disabled_at = now() WHERE id = $1 AND disabled_at IS NULL RETURNING id;

-- name: set_treasury
INSERT INTO merchant_treasuries (merchant, chain, address, approval) VALUES ($1, $2, $3, $4)
ON CONFLICT (merchant, chain)
DO UPDATE SET address = EXCLUDED.address, approval = EXCLUDED.approval, set_at = now();

-- name: unset_treasury
DELETE FROM merchant_treasuries WHERE merchant = $1 AND chain = $2 RETURNING address;

-- name: treasuries
SELECT chain, address FROM merchant_treasuries WHERE merchant = $1 ORDER BY chain;
