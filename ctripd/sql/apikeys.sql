-- name: insert_key
INSERT INTO api_keys (name, merchant, prefix, key_hash, scopes, rate_limit)
VALUES ($1, $2, $3, $4, $5, $6)
RETURNING id, name, merchant, scopes, rate_limit, prefix, created_at, revoked_at;

-- name: key_by_hash
-- A live key of a merchant that is not disabled.
SELECT k.id, k.merchant, k.scopes, k.rate_limit, k.key_hash
FROM api_keys k JOIN merchants m ON m.id = k.merchant
WHERE k.key_hash = $1 AND k.revoked_at IS NULL AND m.disabled_at IS NULL;

-- name: list_keys
SELECT id, name, merchant, scopes, rate_limit, prefix, created_at, revoked_at
FROM api_keys ORDER BY id;

-- name: revoke_key
UPDATE api_keys SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL RETURNING id;

-- name: key_exists
SELECT revoked_at FROM api_keys WHERE id = $1;
