-- Webhook endpoints of merchants: each event fans out to one events row per target (the
-- `[webhooks] url` of the config for the default merchant, with endpoint_id NULL, and each live
-- endpoint of the event's merchant whose filter takes its type), each its own delivery with its
-- own id, retries, ordering and attempt log.
-- depends: 0016.merchants

CREATE TABLE webhook_endpoints (
    id                      TEXT PRIMARY KEY,
    merchant                TEXT NOT NULL REFERENCES merchants (id),
    url                     TEXT NOT NULL,
    description             TEXT,
    -- NULL: every event type.
    event_types             TEXT[],
    secret                  TEXT NOT NULL,
    -- After a rotation, the previous secret signs too until previous_secret_until.
    previous_secret         TEXT,
    previous_secret_until   TIMESTAMPTZ,
    created_at              TIMESTAMPTZ NOT NULL DEFAULT now(),
    deleted_at              TIMESTAMPTZ
);
CREATE INDEX webhook_endpoints_live ON webhook_endpoints (merchant, created_at)
    WHERE deleted_at IS NULL;

ALTER TABLE events ADD COLUMN endpoint_id TEXT REFERENCES webhook_endpoints (id);

-- The deliveries of one event: (id, endpoint_id) per target; the config endpoint's takes
-- `first_id`, the others fresh ids of the same form.
CREATE FUNCTION event_targets(merchant TEXT, event_type TEXT, first_id TEXT)
RETURNS TABLE (id TEXT, endpoint_id TEXT)
LANGUAGE sql VOLATILE AS $$
    SELECT first_id, NULL::text WHERE merchant = 'default'
    UNION ALL
    SELECT 'evt_' || replace(gen_random_uuid()::text, '-', ''), w.id
    FROM webhook_endpoints w
    WHERE w.merchant = event_targets.merchant AND w.deleted_at IS NULL
      AND (w.event_types IS NULL OR event_targets.event_type = ANY (w.event_types))
$$;
