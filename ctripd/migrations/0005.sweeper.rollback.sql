DROP INDEX payments_sweep_due;
ALTER TABLE payments DROP COLUMN sweep_covered;
ALTER TABLE sweep_payments DROP COLUMN covered;
DROP INDEX sweeps_topup_to;
DROP INDEX sweeps_unfinished;
ALTER TABLE sweeps
    DROP COLUMN fee,
    DROP COLUMN effective_gas_price,
    DROP COLUMN gas_used,
    DROP COLUMN block_number,
    DROP COLUMN next_try_at,
    DROP COLUMN attempts,
    DROP COLUMN signed_at;
DROP TABLE sweep_txs;
