-- A key's own rate limit (requests per `server.rate_limit_window`, 0: none); NULL: the
-- configured `server.rate_limit`.
-- depends: 0018.key-scopes

ALTER TABLE api_keys ADD COLUMN rate_limit INTEGER CHECK (rate_limit >= 0);
