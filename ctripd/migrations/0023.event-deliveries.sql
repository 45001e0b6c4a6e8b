-- Events and their deliveries apart: an event is one row whatever its merchant's endpoints (so a
-- merchant without a live endpoint still has its events listed, and every endpoint receives the
-- same event id); each delivery of it to one endpoint has its own status, retries and attempt
-- log. `lane` names the endpoint a delivery goes to ('' for the `[webhooks] url`), so claims can
-- take a fair share from each endpoint.
-- depends: 0022.operator-webhook-rows

CREATE TABLE deliveries (
    seq             BIGSERIAL UNIQUE,
    id              TEXT PRIMARY KEY,
    event_id        TEXT NOT NULL REFERENCES events (id) ON DELETE CASCADE,
    -- The event's seq and payment, for the order of one payment's deliveries to one endpoint.
    event_seq       BIGINT NOT NULL,
    payment_id      TEXT,
    endpoint_id     TEXT REFERENCES webhook_endpoints (id),
    lane            TEXT GENERATED ALWAYS AS (coalesce(endpoint_id, '')) STORED,
    status          TEXT NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- Waiting while an earlier delivery of its payment to its endpoint is retried (see 0004).
    held            BOOLEAN NOT NULL DEFAULT false,
    delivered_at    TIMESTAMPTZ,
    last_error      TEXT
);
CREATE INDEX deliveries_event ON deliveries (event_id);
CREATE INDEX deliveries_pending_lane ON deliveries (lane) WHERE status = 'pending';
CREATE INDEX deliveries_due_fresh ON deliveries (lane, next_attempt_at, seq)
    WHERE status = 'pending' AND attempts = 0 AND NOT held;
CREATE INDEX deliveries_due_retry ON deliveries (lane, next_attempt_at, seq)
    WHERE status = 'pending' AND attempts > 0;
CREATE INDEX deliveries_pending_payment ON deliveries (payment_id, lane, event_seq)
    WHERE status = 'pending';
CREATE INDEX deliveries_failed ON deliveries (seq) WHERE status = 'failed';

-- Each existing row was one delivery of its own event (its own id and payload): it stays an
-- event, with that delivery beside it.
INSERT INTO deliveries (id, event_id, event_seq, payment_id, endpoint_id, status, attempts,
                        next_attempt_at, held, delivered_at, last_error)
SELECT 'dlv_' || substr(id, 5), id, seq, payment_id, endpoint_id, status, attempts,
       next_attempt_at, held, delivered_at, last_error
FROM events ORDER BY seq;

ALTER TABLE delivery_attempts ADD COLUMN delivery_id TEXT REFERENCES deliveries (id) ON DELETE CASCADE;
UPDATE delivery_attempts SET delivery_id = 'dlv_' || substr(event_id, 5);
ALTER TABLE delivery_attempts ALTER COLUMN delivery_id SET NOT NULL;
ALTER TABLE delivery_attempts DROP COLUMN event_id;
CREATE INDEX delivery_attempts_delivery ON delivery_attempts (delivery_id, attempted_at);

ALTER TABLE events DROP COLUMN endpoint_id, DROP COLUMN status, DROP COLUMN attempts,
    DROP COLUMN next_attempt_at, DROP COLUMN held, DROP COLUMN delivered_at,
    DROP COLUMN last_error;

-- The endpoints an event of `merchant` and `event_type` goes to: the config's `[webhooks] url`
-- (NULL) for the default merchant while one is set, and each live endpoint of the merchant whose
-- filter takes the type.
CREATE FUNCTION event_endpoints(merchant TEXT, event_type TEXT, operator_url BOOLEAN)
RETURNS TABLE (endpoint_id TEXT)
LANGUAGE sql STABLE AS $$
    SELECT NULL::text WHERE merchant = 'default' AND operator_url
    UNION ALL
    SELECT w.id
    FROM webhook_endpoints w
    WHERE w.merchant = event_endpoints.merchant AND w.deleted_at IS NULL
      AND (w.event_types IS NULL OR event_endpoints.event_type = ANY (w.event_types))
$$;
DROP FUNCTION event_targets(TEXT, TEXT, TEXT, BOOLEAN);
