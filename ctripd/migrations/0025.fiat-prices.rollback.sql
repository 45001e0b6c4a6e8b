DROP TABLE payment_options;
ALTER TABLE payments
    DROP CONSTRAINT payments_price_complete,
    DROP COLUMN price_confirmed,
    DROP COLUMN price_received,
    DROP COLUMN price_currency,
    DROP COLUMN price_amount;
