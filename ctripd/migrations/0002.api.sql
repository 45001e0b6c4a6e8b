-- Payments API: the key that signs list cursors, and the index the expiry job scans.

-- Server-side secrets generated once per database and shared by every ctripd process on it.
CREATE TABLE server_secrets (
    name        TEXT PRIMARY KEY,
    value       BYTEA NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);
-- 32 bytes from two v4 UUIDs (pg_strong_random; 244 random bits), for HMAC of list cursors.
INSERT INTO server_secrets (name, value)
VALUES ('cursor_hmac', decode(replace(gen_random_uuid()::text || gen_random_uuid()::text, '-', ''), 'hex'));

CREATE INDEX payments_pending_expiry ON payments (expires_at) WHERE status = 'pending';
