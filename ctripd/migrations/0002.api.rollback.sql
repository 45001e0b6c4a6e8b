DROP INDEX IF EXISTS payments_pending_expiry;
DROP TABLE IF EXISTS server_secrets;
