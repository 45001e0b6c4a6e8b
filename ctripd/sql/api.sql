-- name: cursor_key
SELECT value FROM server_secrets WHERE name = 'cursor_hmac';
