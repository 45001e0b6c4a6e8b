ALTER TABLE api_keys DROP CONSTRAINT api_keys_merchant_fkey;
DROP TABLE merchants;
