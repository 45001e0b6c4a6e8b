-- EIP-7702 sweeps. `sweep_delegates`: the delegate contract of each (chain, treasury), deployed
-- by the gas wallet in the `deploy` sweep recorded with it (before broadcast; its address follows
-- from the gas wallet's nonce), or configured (`sweep_id` NULL). A `batch` sweep is one type-4
-- transaction of the gas wallet: `sweep_entries` are the deposits it sweeps, each with the
-- authorization nonce it signed for the deposit (NULL: already delegated) and, once mined, what
-- the receipt shows moved to the treasury.
-- depends: 0023.event-deliveries

ALTER TABLE sweeps DROP CONSTRAINT sweeps_kind_check;
ALTER TABLE sweeps ADD CONSTRAINT sweeps_kind_check
    CHECK (kind IN ('native', 'token', 'gas_topup', 'recover', 'deploy', 'batch'));

CREATE TABLE sweep_delegates (
    chain       TEXT NOT NULL,
    treasury    TEXT NOT NULL,
    address     TEXT NOT NULL,
    sweep_id    BIGINT REFERENCES sweeps(id),
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (chain, treasury)
);

CREATE TABLE sweep_entries (
    sweep_id        BIGINT NOT NULL REFERENCES sweeps(id) ON DELETE CASCADE,
    address         TEXT NOT NULL,
    address_index   BIGINT NOT NULL,
    token_address   TEXT,
    amount          NUMERIC(78,0) NOT NULL,
    auth_nonce      BIGINT,
    moved           NUMERIC(78,0),
    status          TEXT NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'swept', 'failed')),
    PRIMARY KEY (sweep_id, address)
);
CREATE INDEX sweep_entries_address ON sweep_entries (address);
