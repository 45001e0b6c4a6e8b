-- Held funds (another asset than the payment's, or at an expired or canceled payment) sent
-- where the operator says with `ctripd recover`: the request, approved with a key only the
-- wallet's mnemonic gives, is carried out by the sweeper as a `recover` sweep.
-- depends: 0010.sweep-change

ALTER TABLE sweeps DROP CONSTRAINT sweeps_kind_check;
ALTER TABLE sweeps ADD CONSTRAINT sweeps_kind_check
    CHECK (kind IN ('native', 'token', 'gas_topup', 'recover'));

CREATE TABLE recoveries (
    id              BIGSERIAL PRIMARY KEY,
    chain           TEXT NOT NULL,
    payment_id      TEXT NOT NULL REFERENCES payments(id),
    token_address   TEXT,
    to_address      TEXT NOT NULL,
    amount          NUMERIC(78,0) NOT NULL CHECK (amount > 0),
    approval        BYTEA NOT NULL,
    status          TEXT NOT NULL DEFAULT 'approved'
        CHECK (status IN ('approved', 'done', 'failed')),
    sweep_id        BIGINT REFERENCES sweeps(id),
    error           TEXT,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at      TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX recoveries_open ON recoveries (chain, id) WHERE status = 'approved';
CREATE INDEX recoveries_payment ON recoveries (payment_id);
