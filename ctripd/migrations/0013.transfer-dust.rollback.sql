-- A live dust aggregate becomes one transfer of its own kind, named by the last transfer it stood
-- for (which has no row of its own), so its amount stays counted in the sums, the sweeps and
-- reconcile. Orphaned aggregates count nowhere and may name the same transfer as a live one:
-- they go.
CREATE INDEX transfers_payment ON transfers (payment_id);
DROP INDEX transfers_payment_block;
ALTER TABLE transfers DROP CONSTRAINT transfers_count_positive;
DELETE FROM transfers WHERE kind = 'dust' AND status = 'orphaned';
UPDATE transfers
SET kind = CASE WHEN token_address IS NOT NULL THEN 'token'
                WHEN log_index = -1 THEN 'native'
                ELSE 'internal' END
WHERE kind = 'dust';
DROP INDEX transfers_dust_key;
DROP INDEX transfers_onchain_key;
ALTER TABLE transfers ADD CONSTRAINT transfers_chain_tx_hash_kind_log_index_key
    UNIQUE (chain, tx_hash, kind, log_index);
ALTER TABLE transfers DROP CONSTRAINT transfers_kind_check;
ALTER TABLE transfers ADD CONSTRAINT transfers_kind_check
    CHECK (kind IN ('native', 'token', 'internal'));
ALTER TABLE transfers DROP COLUMN transfer_count;
