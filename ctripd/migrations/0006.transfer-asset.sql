-- The asset of each transfer (symbol and decimals), written by crediting from the chain config,
-- so that a transfer in another asset than its payment's (tokens sent to a native payment, coin
-- to a token payment) is shown in its own units rather than the payment's.
-- depends: 0001.initial-schema

ALTER TABLE transfers ADD COLUMN asset TEXT, ADD COLUMN decimals INTEGER;

-- Existing rows in their payment's asset take the payment's.
UPDATE transfers t SET asset = p.asset, decimals = p.decimals
FROM payments p
WHERE p.id = t.payment_id
  AND lower(coalesce(t.token_address, '')) = lower(coalesce(p.token_address, ''));

-- Existing rows in another asset take it from the newest payment in that asset on the same chain
-- (a token is its contract address on its chain); with no such payment they stay NULL, and the
-- API shows their `amount` as null (`amount_base_units` is always there).
UPDATE transfers t SET asset = k.asset, decimals = k.decimals
FROM (
    SELECT DISTINCT ON (chain, lower(coalesce(token_address, '')))
           chain, lower(coalesce(token_address, '')) AS token, asset, decimals
    FROM payments
    ORDER BY chain, lower(coalesce(token_address, '')), created_at DESC, id DESC
) k
WHERE t.asset IS NULL AND k.chain = t.chain AND k.token = lower(coalesce(t.token_address, ''));

ALTER TABLE transfers ADD CONSTRAINT transfers_asset_known
    CHECK ((asset IS NULL) = (decimals IS NULL));
