-- Sweeper: every signed version of a sweep (a fee replacement keeps the nonce, and any version
-- may be the one mined), retry timing, the receipt facts reconciliation needs, and how much of
-- each payment's confirmed amount has been swept (or found to be dust).
-- depends: 0001.initial-schema

CREATE TABLE sweep_txs (
    id                  BIGSERIAL PRIMARY KEY,
    sweep_id            BIGINT NOT NULL REFERENCES sweeps(id) ON DELETE CASCADE,
    tx_hash             TEXT NOT NULL UNIQUE,
    raw_tx              TEXT NOT NULL,
    amount              NUMERIC(78,0) NOT NULL,
    max_fee_per_gas     NUMERIC(78,0),
    max_priority_fee    NUMERIC(78,0),
    gas_price           NUMERIC(78,0),
    signed_at           TIMESTAMPTZ NOT NULL
);
CREATE INDEX sweep_txs_sweep ON sweep_txs (sweep_id, id);

-- The sweeps row keeps the current version (raw_tx, tx_hash, amount, fees, signed_at) and, once
-- mined, the receipt of the version that was.
ALTER TABLE sweeps
    ADD COLUMN signed_at            TIMESTAMPTZ,
    ADD COLUMN attempts             INTEGER NOT NULL DEFAULT 0,
    ADD COLUMN next_try_at          TIMESTAMPTZ,
    ADD COLUMN block_number         BIGINT,
    ADD COLUMN gas_used             BIGINT,
    ADD COLUMN effective_gas_price  NUMERIC(78,0),
    ADD COLUMN fee                  NUMERIC(78,0);
CREATE INDEX sweeps_unfinished ON sweeps (chain, id) WHERE status IN ('signed', 'broadcast');
CREATE INDEX sweeps_topup_to ON sweeps (chain, to_address) WHERE kind = 'gas_topup';

-- The payment's amount_confirmed that the sweep covers, applied to the payment on confirmation.
ALTER TABLE sweep_payments ADD COLUMN covered NUMERIC(78,0) NOT NULL DEFAULT 0;

-- Funds confirmed after a sweep (amount_confirmed grows past it) make the payment due again.
ALTER TABLE payments ADD COLUMN sweep_covered NUMERIC(78,0) NOT NULL DEFAULT 0;
CREATE INDEX payments_sweep_due ON payments (chain)
    WHERE status = 'confirmed' AND amount_confirmed > sweep_covered;
