-- Funds a deposit's sweep delegate moved to its treasury in a transaction ctripd did not send
-- (anyone may trigger the delegate, SPEC §16): found by the deposit's `Swept` log with the token's
-- Transfer to the treasury in the same receipt, booked once per log for the deposit's payment
-- (an address belongs to one payment), which counts as swept by that transaction.
-- depends: 0025.fiat-prices

CREATE TABLE outside_sweeps (
    id              BIGSERIAL PRIMARY KEY,
    chain           TEXT NOT NULL,
    tx_hash         TEXT NOT NULL,
    log_index       INTEGER NOT NULL,
    block_number    BIGINT NOT NULL,
    address         TEXT NOT NULL,
    token_address   TEXT,
    treasury        TEXT NOT NULL,
    amount          NUMERIC(78,0) NOT NULL,
    payment_id      TEXT NOT NULL REFERENCES payments(id),
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (chain, tx_hash, log_index)
);
CREATE INDEX outside_sweeps_payment ON outside_sweeps (payment_id);
