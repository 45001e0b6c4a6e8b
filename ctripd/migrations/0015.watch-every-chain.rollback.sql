CREATE INDEX payments_chain_created_xid ON payments (chain, created_xid);
DROP INDEX payments_created_xid;
