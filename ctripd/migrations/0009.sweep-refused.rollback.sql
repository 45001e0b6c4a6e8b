UPDATE sweeps SET status = 'failed' WHERE status = 'refused';
ALTER TABLE sweeps DROP CONSTRAINT sweeps_status_check;
ALTER TABLE sweeps ADD CONSTRAINT sweeps_status_check
    CHECK (status IN ('planned', 'signed', 'broadcast', 'confirmed', 'failed'));
