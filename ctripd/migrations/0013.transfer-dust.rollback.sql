-- Aggregated dust has no single-transfer form: its rows go, and the sums recomputed from the
-- remaining rows no longer count it.
CREATE INDEX transfers_payment ON transfers (payment_id);
DROP INDEX transfers_payment_block;
DELETE FROM transfers WHERE kind = 'dust';
DROP INDEX transfers_dust_key;
DROP INDEX transfers_onchain_key;
ALTER TABLE transfers ADD CONSTRAINT transfers_chain_tx_hash_kind_log_index_key
    UNIQUE (chain, tx_hash, kind, log_index);
ALTER TABLE transfers DROP CONSTRAINT transfers_kind_check;
ALTER TABLE transfers ADD CONSTRAINT transfers_kind_check
    CHECK (kind IN ('native', 'token', 'internal'));
ALTER TABLE transfers DROP CONSTRAINT transfers_count_positive;
ALTER TABLE transfers DROP COLUMN transfer_count;
