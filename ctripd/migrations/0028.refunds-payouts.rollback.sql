ALTER TABLE payments DROP COLUMN refund_status;
DROP TABLE payouts;
DROP TABLE refunds;
DELETE FROM sweep_txs WHERE sweep_id IN (SELECT id FROM sweeps WHERE kind IN ('refund', 'payout'));
DELETE FROM sweeps WHERE kind IN ('refund', 'payout');
ALTER TABLE sweeps DROP CONSTRAINT sweeps_kind_check;
ALTER TABLE sweeps ADD CONSTRAINT sweeps_kind_check
    CHECK (kind IN ('native', 'token', 'gas_topup', 'recover', 'deploy', 'batch'));
