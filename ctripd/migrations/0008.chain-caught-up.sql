-- When the scanner last reached the head the node reported, that report's time: every transfer
-- mined before it is recorded. Expiry waits for it, so that a payment paid in time but seen
-- late (an RPC outage, a catch-up) is never reported expired first.
-- depends: 0001.initial-schema

ALTER TABLE chains ADD COLUMN caught_up_at TIMESTAMPTZ;
UPDATE chains SET caught_up_at = head_seen_at WHERE scanned_block >= head;
