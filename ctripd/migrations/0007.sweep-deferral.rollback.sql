ALTER TABLE payments DROP COLUMN sweep_not_before;
