DROP INDEX payments_unsettled;
DROP INDEX payments_lower_address;
DROP INDEX payments_chain_created_xid;
ALTER TABLE payments DROP COLUMN created_xid;
