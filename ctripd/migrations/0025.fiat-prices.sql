-- Payments priced in a fiat currency (SPEC §15): the price, what arrived in it at the locked
-- rates, and one option per accepted chain and asset with its locked quote and its sums.
-- A fiat payment's chain/asset/amount columns are its first quoted option's, so that everything
-- reading a payment in its own asset (scanner, sweeper, metrics) keeps working.
-- depends: 0024.sweep-delegates

ALTER TABLE payments
    ADD COLUMN price_amount NUMERIC CHECK (price_amount > 0),
    ADD COLUMN price_currency TEXT,
    ADD COLUMN price_received NUMERIC,
    ADD COLUMN price_confirmed NUMERIC,
    ADD CONSTRAINT payments_price_complete
        CHECK ((price_amount IS NULL) = (price_currency IS NULL));

-- One accepted option of a fiat payment. `rate` (currency per whole asset unit), `sources` and
-- `fetched_at` are the quote locked at creation; an option that could not be quoted has none
-- (`unavailable` says why) and funds in it are held, not counted. received/confirmed are base
-- units of the option's live transfers, kept by the crediting step.
CREATE TABLE payment_options (
    payment_id              TEXT NOT NULL REFERENCES payments(id),
    position                INTEGER NOT NULL,
    chain                   TEXT NOT NULL,
    chain_id                BIGINT NOT NULL,
    asset                   TEXT NOT NULL,
    token_address           TEXT,
    decimals                INTEGER NOT NULL,
    confirmations_required  INTEGER NOT NULL,
    amount                  NUMERIC(78,0) CHECK (amount > 0),
    rate                    NUMERIC CHECK (rate > 0),
    sources                 JSONB,
    fetched_at              TIMESTAMPTZ,
    unavailable             TEXT,
    received                NUMERIC(78,0) NOT NULL DEFAULT 0,
    confirmed               NUMERIC(78,0) NOT NULL DEFAULT 0,
    PRIMARY KEY (payment_id, position),
    CHECK ((rate IS NULL) = (amount IS NULL) AND (rate IS NULL) = (unavailable IS NOT NULL))
);
-- The options whose amounts still wait for confirmations, for their chain's scanner.
CREATE INDEX payment_options_unconfirmed ON payment_options (chain, payment_id)
    WHERE confirmed < received;
