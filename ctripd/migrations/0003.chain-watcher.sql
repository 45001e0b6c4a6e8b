-- depends: 0001.initial-schema

-- Chain watcher. created_xid: the creating transaction of a payment, so the scanner's in-memory
-- address set is refreshed exactly (rows committed after its last snapshot, whatever their
-- created_at or address_index). Lookups by lowercase address, and the payments whose amounts
-- still wait for confirmations.
ALTER TABLE payments ADD COLUMN created_xid xid8 NOT NULL DEFAULT pg_current_xact_id();
CREATE INDEX payments_chain_created_xid ON payments (chain, created_xid);
CREATE INDEX payments_lower_address ON payments (lower(address));
CREATE INDEX payments_unsettled ON payments (chain)
    WHERE status = 'detected' OR amount_confirmed < amount_received;
