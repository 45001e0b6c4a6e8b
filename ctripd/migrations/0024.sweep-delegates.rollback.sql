DROP TABLE sweep_entries;
DROP TABLE sweep_delegates;
DELETE FROM sweeps WHERE kind IN ('deploy', 'batch');
ALTER TABLE sweeps DROP CONSTRAINT sweeps_kind_check;
ALTER TABLE sweeps ADD CONSTRAINT sweeps_kind_check
    CHECK (kind IN ('native', 'token', 'gas_topup', 'recover'));
