DROP INDEX events_merchant_seq;
DROP INDEX events_pending_payment;
DROP INDEX events_due_retry;
DROP INDEX events_due_fresh;
ALTER TABLE events DROP COLUMN held;
