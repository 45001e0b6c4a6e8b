-- A merchant's own treasury on a chain, set by the operator's CLI: its payments on that chain are
-- swept there instead of the chain's treasury. The approval (HMAC under the wallet's approval
-- key, which only the mnemonic gives) is checked by the signing policy, so a row written into
-- the database by anyone else moves nothing.
-- depends: 0019.key-rate-limits

CREATE TABLE merchant_treasuries (
    merchant    TEXT NOT NULL REFERENCES merchants (id),
    chain       TEXT NOT NULL,
    address     TEXT NOT NULL,
    approval    BYTEA NOT NULL,
    set_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (merchant, chain)
);
