-- A payment whose sweep cannot be planned now (its balance does not pay today's fee, or the node
-- could not be asked) is looked at again after this time, instead of being written off as dust
-- or holding up the payments behind it in the planning order.
-- depends: 0005.sweeper

ALTER TABLE payments ADD COLUMN sweep_not_before TIMESTAMPTZ;
