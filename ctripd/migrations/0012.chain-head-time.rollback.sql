ALTER TABLE chains DROP COLUMN head_time;
