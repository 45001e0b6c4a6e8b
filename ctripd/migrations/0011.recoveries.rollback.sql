DROP TABLE recoveries;
DELETE FROM sweeps WHERE kind = 'recover';
ALTER TABLE sweeps DROP CONSTRAINT sweeps_kind_check;
ALTER TABLE sweeps ADD CONSTRAINT sweeps_kind_check
    CHECK (kind IN ('native', 'token', 'gas_topup'));
