-- Back to one events row per delivery: an event's first delivery keeps the event's id, each
-- further one becomes a copy of the event under its delivery's id; events no endpoint took are
-- dropped (that schema cannot hold them).
CREATE FUNCTION event_targets(merchant TEXT, event_type TEXT, first_id TEXT, operator_url BOOLEAN)
RETURNS TABLE (id TEXT, endpoint_id TEXT)
LANGUAGE sql VOLATILE AS $$
    SELECT first_id, NULL::text WHERE merchant = 'default' AND operator_url
    UNION ALL
    SELECT 'evt_' || replace(gen_random_uuid()::text, '-', ''), w.id
    FROM webhook_endpoints w
    WHERE w.merchant = event_targets.merchant AND w.deleted_at IS NULL
      AND (w.event_types IS NULL OR event_targets.event_type = ANY (w.event_types))
$$;
DROP FUNCTION event_endpoints(TEXT, TEXT, BOOLEAN);

ALTER TABLE events ADD COLUMN endpoint_id TEXT REFERENCES webhook_endpoints (id),
    ADD COLUMN status TEXT NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'delivered', 'failed')),
    ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0,
    ADD COLUMN next_attempt_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    ADD COLUMN held BOOLEAN NOT NULL DEFAULT false,
    ADD COLUMN delivered_at TIMESTAMPTZ,
    ADD COLUMN last_error TEXT;

CREATE TEMPORARY TABLE delivery_rows AS
SELECT d.*, row_number() OVER (PARTITION BY d.event_id ORDER BY d.seq) = 1 AS first,
       'evt_' || substr(d.id, 5) AS row_id
FROM deliveries d;

UPDATE events e
SET endpoint_id = d.endpoint_id, status = d.status, attempts = d.attempts,
    next_attempt_at = d.next_attempt_at, held = d.held, delivered_at = d.delivered_at,
    last_error = d.last_error
FROM delivery_rows d
WHERE d.event_id = e.id AND d.first;

INSERT INTO events (id, payment_id, merchant, type, payload, created_at, endpoint_id, status,
                    attempts, next_attempt_at, held, delivered_at, last_error)
SELECT d.row_id, e.payment_id, e.merchant, e.type,
       jsonb_set(e.payload, '{id}', to_jsonb(d.row_id)), e.created_at, d.endpoint_id, d.status,
       d.attempts, d.next_attempt_at, d.held, d.delivered_at, d.last_error
FROM delivery_rows d JOIN events e ON e.id = d.event_id
WHERE NOT d.first
ORDER BY d.seq;

DELETE FROM events e WHERE NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = e.id);

ALTER TABLE delivery_attempts ADD COLUMN event_id TEXT REFERENCES events (id) ON DELETE CASCADE;
UPDATE delivery_attempts a
SET event_id = CASE WHEN d.first THEN d.event_id ELSE d.row_id END
FROM delivery_rows d WHERE d.id = a.delivery_id;
ALTER TABLE delivery_attempts ALTER COLUMN event_id SET NOT NULL;
ALTER TABLE delivery_attempts DROP COLUMN delivery_id;
CREATE INDEX delivery_attempts_event ON delivery_attempts (event_id, attempted_at);

DROP TABLE delivery_rows;
DROP TABLE deliveries;

CREATE INDEX events_due_fresh ON events (next_attempt_at, seq)
    WHERE status = 'pending' AND attempts = 0 AND NOT held;
CREATE INDEX events_due_retry ON events (next_attempt_at, seq)
    WHERE status = 'pending' AND attempts > 0;
CREATE INDEX events_pending_payment ON events (payment_id, seq) WHERE status = 'pending';
CREATE INDEX events_pending ON events (next_attempt_at, seq) WHERE status = 'pending';
CREATE INDEX events_failed ON events (seq) WHERE status = 'failed';
