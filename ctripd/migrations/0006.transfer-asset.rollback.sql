ALTER TABLE transfers DROP COLUMN decimals, DROP COLUMN asset;
