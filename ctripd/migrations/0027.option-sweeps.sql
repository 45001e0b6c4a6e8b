-- Every accepted asset of a payment priced in fiat is swept, not only its first option's: each
-- quoted option keeps what sweeps covered of its confirmed amount (`sweep_covered`), and a sweep
-- names the option it covers (`sweep_payments.position`; NULL: the payment's own asset).
-- `payment_assets` is what the sweeper, the signing policy and the books read a payment's funds
-- from: a payment in asset units as one row, a payment priced in fiat as one row per quoted
-- option, each on its chain and in its asset, with what is confirmed and swept of it.
-- depends: 0026.outside-sweeps

ALTER TABLE payment_options ADD COLUMN sweep_covered NUMERIC(78,0) NOT NULL DEFAULT 0;
ALTER TABLE sweep_payments ADD COLUMN position INTEGER;

-- What the first option's sweeps covered so far was kept in the payment's columns.
UPDATE payment_options o SET sweep_covered = p.sweep_covered
FROM payments p
WHERE p.id = o.payment_id AND p.price_amount IS NOT NULL AND o.rate IS NOT NULL
  AND o.chain = p.chain
  AND lower(coalesce(o.token_address, '')) = lower(coalesce(p.token_address, ''));
UPDATE sweep_payments sp SET position = o.position
FROM payments p, payment_options o
WHERE p.id = sp.payment_id AND p.price_amount IS NOT NULL AND o.payment_id = p.id
  AND o.rate IS NOT NULL AND o.chain = p.chain
  AND lower(coalesce(o.token_address, '')) = lower(coalesce(p.token_address, ''));

-- Payments in asset units only: a fiat payment's own columns are never swept from.
DROP INDEX payments_sweep_due;
CREATE INDEX payments_sweep_due ON payments (chain)
    WHERE status = 'confirmed' AND amount_confirmed > sweep_covered AND price_amount IS NULL;
CREATE INDEX payment_options_sweep_due ON payment_options (chain)
    WHERE confirmed > sweep_covered;

CREATE VIEW payment_assets AS
SELECT p.id AS payment_id, NULL::integer AS position, p.chain, p.token_address, p.asset,
       p.decimals, p.status, p.amount_confirmed AS confirmed, p.sweep_covered
FROM payments p
WHERE p.price_amount IS NULL
UNION ALL
SELECT o.payment_id, o.position, o.chain, o.token_address, o.asset, o.decimals, p.status,
       o.confirmed, o.sweep_covered
FROM payment_options o JOIN payments p ON p.id = o.payment_id
WHERE o.rate IS NOT NULL;
