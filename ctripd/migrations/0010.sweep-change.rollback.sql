ALTER TABLE sweeps DROP COLUMN change_checked;
