-- The head block's own timestamp. A node that stopped following its chain keeps reporting the
-- same head: judged by the block's age, the chain is then stalled, and the scanner having
-- reached that head no longer says every transfer mined until now is recorded.
-- depends: 0011.recoveries

ALTER TABLE chains ADD COLUMN head_time TIMESTAMPTZ;
