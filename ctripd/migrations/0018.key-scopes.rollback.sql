-- Without scopes every key may do everything: revoke the keys limited to fewer than all of them.
UPDATE api_keys SET revoked_at = now()
WHERE revoked_at IS NULL
  AND NOT scopes @> ARRAY[
      'payments:write', 'payments:read', 'events:read', 'events:write', 'refunds:write',
      'payouts:write', 'webhooks:manage'];
ALTER TABLE api_keys DROP COLUMN scopes;
