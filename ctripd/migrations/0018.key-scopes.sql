-- Scopes of API keys: what each key may do. Keys made before scopes existed keep every scope;
-- new keys get theirs from `ctripd api-key create` (every scope unless --scope says otherwise).
-- depends: 0017.webhook-endpoints

ALTER TABLE api_keys ADD COLUMN scopes TEXT[] NOT NULL DEFAULT ARRAY[
    'payments:write', 'payments:read', 'events:read', 'events:write', 'refunds:write',
    'payouts:write', 'webhooks:manage'];
ALTER TABLE api_keys ALTER COLUMN scopes DROP DEFAULT;
