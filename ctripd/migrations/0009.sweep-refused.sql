-- A sweep row the signing policy refused to sign (it asks for a transfer the config and the
-- ledger do not allow): `refused`, final, with the rule it broke in `error`.
-- depends: 0008.chain-caught-up

ALTER TABLE sweeps DROP CONSTRAINT sweeps_status_check;
ALTER TABLE sweeps ADD CONSTRAINT sweeps_status_check
    CHECK (status IN ('planned', 'signed', 'broadcast', 'confirmed', 'failed', 'refused'));
