-- Webhook delivery: indexes for the two claim lanes (first attempts before retries), for the
-- per-payment ordering check and for the events API.
-- depends: 0001.initial-schema

-- A pending event that waits while an earlier event of its payment is being retried is held out
-- of the due range, so that claims do not rescan a dead endpoint's backlog; the earlier event's
-- final outcome releases it.
ALTER TABLE events ADD COLUMN held BOOLEAN NOT NULL DEFAULT false;

CREATE INDEX events_due_fresh ON events (next_attempt_at, seq)
    WHERE status = 'pending' AND attempts = 0 AND NOT held;
CREATE INDEX events_due_retry ON events (next_attempt_at, seq)
    WHERE status = 'pending' AND attempts > 0;
CREATE INDEX events_pending_payment ON events (payment_id, seq) WHERE status = 'pending';
CREATE INDEX events_merchant_seq ON events (merchant, seq);
