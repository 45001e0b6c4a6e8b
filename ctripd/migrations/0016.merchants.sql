-- Merchants as rows: every API key belongs to one that exists; a disabled merchant's keys stop
-- working. Merchants already named by keys or payments become rows, named after their ids.
-- depends: 0015.watch-every-chain

CREATE TABLE merchants (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    disabled_at TIMESTAMPTZ
);
INSERT INTO merchants (id, name) VALUES ('default', 'default');
INSERT INTO merchants (id, name)
SELECT merchant, merchant FROM api_keys
UNION
SELECT DISTINCT merchant, merchant FROM payments
ON CONFLICT (id) DO NOTHING;

ALTER TABLE api_keys ADD CONSTRAINT api_keys_merchant_fkey
    FOREIGN KEY (merchant) REFERENCES merchants (id);
