DROP VIEW payment_assets;
DROP INDEX payment_options_sweep_due;
DROP INDEX payments_sweep_due;
CREATE INDEX payments_sweep_due ON payments (chain)
    WHERE status = 'confirmed' AND amount_confirmed > sweep_covered;
-- The first option's coverage goes back to the payment's columns; the others' is forgotten.
UPDATE payments p SET sweep_covered = o.sweep_covered
FROM payment_options o
WHERE o.payment_id = p.id AND p.price_amount IS NOT NULL AND o.chain = p.chain
  AND lower(coalesce(o.token_address, '')) = lower(coalesce(p.token_address, ''));
ALTER TABLE sweep_payments DROP COLUMN position;
ALTER TABLE payment_options DROP COLUMN sweep_covered;
