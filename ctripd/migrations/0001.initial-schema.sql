-- Initial ctripd schema: chains and their recent-block window, API keys, payments, transfers,
-- webhook events with delivery attempts, and sweeps. Amounts are base units in NUMERIC(78,0).

CREATE TABLE chains (
    name            TEXT PRIMARY KEY,
    chain_id        BIGINT NOT NULL UNIQUE,
    head            BIGINT,
    head_seen_at    TIMESTAMPTZ,
    scanned_block   BIGINT,
    scanned_at      TIMESTAMPTZ,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Hashes of the recent (unconfirmed) window of scanned blocks, for reorg detection.
CREATE TABLE blocks (
    chain       TEXT NOT NULL REFERENCES chains(name) ON DELETE CASCADE,
    number      BIGINT NOT NULL,
    hash        TEXT NOT NULL,
    parent_hash TEXT NOT NULL,
    PRIMARY KEY (chain, number)
);

CREATE TABLE api_keys (
    id          BIGSERIAL PRIMARY KEY,
    name        TEXT NOT NULL,
    merchant    TEXT NOT NULL DEFAULT 'default',
    prefix      TEXT NOT NULL,
    key_hash    BYTEA NOT NULL UNIQUE,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    revoked_at  TIMESTAMPTZ
);

-- Deposit address derivation indexes; index 0 and below are kept for operator wallets.
CREATE SEQUENCE address_index_seq START WITH 1000 MINVALUE 1000;

CREATE TABLE payments (
    id                      TEXT PRIMARY KEY,
    merchant                TEXT NOT NULL,
    chain                   TEXT NOT NULL,
    chain_id                BIGINT NOT NULL,
    asset                   TEXT NOT NULL,
    token_address           TEXT,
    decimals                INTEGER NOT NULL,
    amount                  NUMERIC(78,0) NOT NULL CHECK (amount > 0),
    address                 TEXT NOT NULL UNIQUE,
    address_index           BIGINT NOT NULL UNIQUE,
    status                  TEXT NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'detected', 'confirmed', 'expired', 'canceled')),
    amount_received         NUMERIC(78,0) NOT NULL DEFAULT 0,
    amount_confirmed        NUMERIC(78,0) NOT NULL DEFAULT 0,
    paid_late               BOOLEAN NOT NULL DEFAULT false,
    confirmations_required  INTEGER NOT NULL,
    order_id                TEXT,
    metadata                JSONB NOT NULL DEFAULT '{}'::jsonb,
    idempotency_key         TEXT,
    request_hash            BYTEA,
    created_at              TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at              TIMESTAMPTZ NOT NULL,
    detected_at             TIMESTAMPTZ,
    confirmed_at            TIMESTAMPTZ,
    expired_at              TIMESTAMPTZ,
    canceled_at             TIMESTAMPTZ,
    UNIQUE (merchant, idempotency_key)
);
CREATE INDEX payments_merchant_created ON payments (merchant, created_at DESC, id DESC);
CREATE INDEX payments_chain_status ON payments (chain, status);
CREATE INDEX payments_order ON payments (merchant, order_id);

-- One row per incoming transfer: (chain, tx hash, kind, position) where position is the log
-- index for tokens, -1 for a top-level native transfer and the trace position for internal ones.
CREATE TABLE transfers (
    id              BIGSERIAL PRIMARY KEY,
    chain           TEXT NOT NULL,
    tx_hash         TEXT NOT NULL,
    kind            TEXT NOT NULL CHECK (kind IN ('native', 'token', 'internal')),
    log_index       INTEGER NOT NULL,
    payment_id      TEXT NOT NULL REFERENCES payments(id),
    token_address   TEXT,
    from_address    TEXT NOT NULL,
    to_address      TEXT NOT NULL,
    amount          NUMERIC(78,0) NOT NULL CHECK (amount >= 0),
    block_number    BIGINT NOT NULL,
    block_hash      TEXT NOT NULL,
    status          TEXT NOT NULL DEFAULT 'live' CHECK (status IN ('live', 'orphaned')),
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    orphaned_at     TIMESTAMPTZ,
    UNIQUE (chain, tx_hash, kind, log_index)
);
CREATE INDEX transfers_payment ON transfers (payment_id);
CREATE INDEX transfers_chain_block ON transfers (chain, block_number);

-- Durable webhook outbox: written in the transaction of the change it reports.
CREATE TABLE events (
    seq             BIGSERIAL UNIQUE,
    id              TEXT PRIMARY KEY,
    payment_id      TEXT REFERENCES payments(id),
    merchant        TEXT NOT NULL,
    type            TEXT NOT NULL,
    payload         JSONB NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    status          TEXT NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    delivered_at    TIMESTAMPTZ,
    last_error      TEXT
);
CREATE INDEX events_pending ON events (next_attempt_at, seq) WHERE status = 'pending';
CREATE INDEX events_payment ON events (payment_id, seq);

CREATE TABLE delivery_attempts (
    id              BIGSERIAL PRIMARY KEY,
    event_id        TEXT NOT NULL REFERENCES events(id) ON DELETE CASCADE,
    attempted_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    url             TEXT NOT NULL,
    http_status     INTEGER,
    latency_ms      INTEGER,
    error           TEXT,
    response_body   TEXT
);
CREATE INDEX delivery_attempts_event ON delivery_attempts (event_id, attempted_at);

-- Sweeps: the intent, nonce, fees and signed raw transaction are stored before broadcast.
CREATE TABLE sweeps (
    id                  BIGSERIAL PRIMARY KEY,
    chain               TEXT NOT NULL,
    kind                TEXT NOT NULL CHECK (kind IN ('native', 'token', 'gas_topup')),
    from_address        TEXT NOT NULL,
    from_index          BIGINT NOT NULL,
    to_address          TEXT NOT NULL,
    token_address       TEXT,
    amount              NUMERIC(78,0) NOT NULL,
    nonce               BIGINT,
    gas_limit           BIGINT,
    max_fee_per_gas     NUMERIC(78,0),
    max_priority_fee    NUMERIC(78,0),
    gas_price           NUMERIC(78,0),
    raw_tx              TEXT,
    tx_hash             TEXT,
    status              TEXT NOT NULL DEFAULT 'planned'
        CHECK (status IN ('planned', 'signed', 'broadcast', 'confirmed', 'failed')),
    error               TEXT,
    created_at          TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at          TIMESTAMPTZ NOT NULL DEFAULT now(),
    broadcast_at        TIMESTAMPTZ,
    confirmed_at        TIMESTAMPTZ,
    UNIQUE (chain, from_address, nonce)
);

CREATE TABLE sweep_payments (
    sweep_id    BIGINT NOT NULL REFERENCES sweeps(id) ON DELETE CASCADE,
    payment_id  TEXT NOT NULL REFERENCES payments(id),
    PRIMARY KEY (sweep_id, payment_id)
);
CREATE INDEX sweep_payments_payment ON sweep_payments (payment_id);
