-- Native coin left at a deposit address after its token sweep (the rest of a gas top-up) goes
-- back to the treasury when it pays for itself. `change_checked` says a token sweep's address
-- was looked at since; token sweeps from before this migration are looked at once too.
-- depends: 0009.sweep-refused

ALTER TABLE sweeps ADD COLUMN change_checked BOOLEAN NOT NULL DEFAULT false;
CREATE INDEX sweeps_change_due ON sweeps (chain)
    WHERE kind = 'token' AND status = 'confirmed' AND NOT change_checked;
