ALTER TABLE chains DROP COLUMN caught_up_at;
