-- Every chain's scanner watches every payment's address (funds sent on the wrong network are
-- recorded and held), so new payments are looked up by creating transaction alone.
-- depends: 0014.status-counts

CREATE INDEX payments_created_xid ON payments (created_xid);
DROP INDEX payments_chain_created_xid;
