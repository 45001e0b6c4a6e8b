-- Without merchant rows nothing refuses a disabled merchant's keys: revoke them first.
UPDATE api_keys SET revoked_at = now()
WHERE revoked_at IS NULL
  AND merchant IN (SELECT id FROM merchants WHERE disabled_at IS NOT NULL);
ALTER TABLE api_keys DROP CONSTRAINT api_keys_merchant_fkey;
DROP TABLE merchants;
