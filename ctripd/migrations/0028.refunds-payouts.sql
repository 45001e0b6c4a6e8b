-- Refunds and payouts (SPEC §13): requests a merchant's authenticated API call recorded, sent by
-- the sweeper as `refund` and `payout` rows of its engine (`sweeps`, linked by `sweep_id` in the
-- transaction that signs them). `binding` is the wallet's approval key's HMAC over the request as
-- recorded (and `approval` the operator's, for payouts where approvals are on): the signing
-- policy sends nothing a database write alone created or redirected.
-- depends: 0027.option-sweeps

ALTER TABLE sweeps DROP CONSTRAINT sweeps_kind_check;
ALTER TABLE sweeps ADD CONSTRAINT sweeps_kind_check
    CHECK (kind IN ('native', 'token', 'gas_topup', 'recover', 'deploy', 'batch', 'refund',
                    'payout'));

-- `status`: requested → signed (its sweep is stored) → confirmed | failed; `broadcast` is read
-- from the sweep. `source`: where it is sent from, chosen when it is signed.
CREATE TABLE refunds (
    id              BIGSERIAL PRIMARY KEY,
    public_id       TEXT NOT NULL UNIQUE,
    payment_id      TEXT NOT NULL REFERENCES payments(id),
    merchant        TEXT NOT NULL,
    chain           TEXT NOT NULL,
    asset           TEXT NOT NULL,
    decimals        INTEGER NOT NULL,
    token_address   TEXT,
    to_address      TEXT NOT NULL,
    amount          NUMERIC(78,0) NOT NULL CHECK (amount > 0),
    binding         BYTEA NOT NULL,
    status          TEXT NOT NULL DEFAULT 'requested'
        CHECK (status IN ('requested', 'signed', 'confirmed', 'failed')),
    source          TEXT CHECK (source IN ('deposit', 'payout_wallet')),
    sweep_id        BIGINT REFERENCES sweeps(id),
    error           TEXT,
    idempotency_key TEXT,
    request_hash    BYTEA,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    confirmed_at    TIMESTAMPTZ,
    UNIQUE (merchant, idempotency_key)
);
CREATE INDEX refunds_payment ON refunds (payment_id, id);
CREATE INDEX refunds_open ON refunds (chain, id) WHERE status IN ('requested', 'signed');

-- `status`: pending_approval → pending (waiting for the payout wallet's funds: `reason`) →
-- signed → confirmed | failed; rejected by the operator instead of approved.
CREATE TABLE payouts (
    id              BIGSERIAL PRIMARY KEY,
    public_id       TEXT NOT NULL UNIQUE,
    merchant        TEXT NOT NULL,
    chain           TEXT NOT NULL,
    asset           TEXT NOT NULL,
    decimals        INTEGER NOT NULL,
    token_address   TEXT,
    to_address      TEXT NOT NULL,
    amount          NUMERIC(78,0) NOT NULL CHECK (amount > 0),
    reference       TEXT,
    binding         BYTEA NOT NULL,
    approval        BYTEA,
    status          TEXT NOT NULL
        CHECK (status IN ('pending_approval', 'pending', 'signed', 'confirmed', 'failed',
                          'rejected')),
    reason          TEXT,
    sweep_id        BIGINT REFERENCES sweeps(id),
    idempotency_key TEXT,
    request_hash    BYTEA,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    approved_at     TIMESTAMPTZ,
    confirmed_at    TIMESTAMPTZ,
    UNIQUE (merchant, idempotency_key)
);
CREATE INDEX payouts_merchant ON payouts (merchant, id DESC);
CREATE INDEX payouts_open ON payouts (chain, id) WHERE status IN ('pending', 'signed');

-- A confirmed payment whose own asset was refunded beyond its overpaid part (set with the
-- refund.confirmed event): partially_refunded, or refunded once all it received went back.
ALTER TABLE payments ADD COLUMN refund_status TEXT
    CHECK (refund_status IN ('partially_refunded', 'refunded'));
