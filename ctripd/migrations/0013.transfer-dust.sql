-- Dust: transfers below their asset's `min_credit` are recorded in aggregate, one row per
-- block, payment and asset (kind 'dust', standing for `transfer_count` transfers; its tx_hash,
-- log_index and from_address are those of the last of them in the scanner's order), so that
-- spam grows the ledger and the webhook outbox with the blocks it uses, not with each transfer.
-- The rows keep their block, so a reorg orphans them as it does single transfers.
-- depends: 0012.chain-head-time

ALTER TABLE transfers ADD COLUMN transfer_count INTEGER NOT NULL DEFAULT 1;
ALTER TABLE transfers ADD CONSTRAINT transfers_count_positive
    CHECK (transfer_count = 1 OR (kind = 'dust' AND transfer_count > 1));
ALTER TABLE transfers DROP CONSTRAINT transfers_kind_check;
ALTER TABLE transfers ADD CONSTRAINT transfers_kind_check
    CHECK (kind IN ('native', 'token', 'internal', 'dust'));

-- A transfer on chain is one row; an aggregate is one per (block hash, payment, asset), and may
-- stand for the same latest transfer as an orphaned aggregate of a replaced block.
ALTER TABLE transfers DROP CONSTRAINT transfers_chain_tx_hash_kind_log_index_key;
CREATE UNIQUE INDEX transfers_onchain_key ON transfers (chain, tx_hash, kind, log_index)
    WHERE kind <> 'dust';
CREATE UNIQUE INDEX transfers_dust_key
    ON transfers (chain, block_hash, payment_id, lower(coalesce(token_address, '')))
    WHERE kind = 'dust';

-- A payment's transfers newest first (its latest few, and the pages of its full list).
CREATE INDEX transfers_payment_block ON transfers (payment_id, block_number, id);
DROP INDEX transfers_payment;
