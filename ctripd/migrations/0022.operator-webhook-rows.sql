-- The delivery to the config's `[webhooks] url` (endpoint_id NULL) is written only while one is
-- set (`operator_url`): without it such a row would never settle, and every claim would read
-- past a growing backlog of them.
-- depends: 0021.payment-merchant-bindings

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
DROP FUNCTION event_targets(TEXT, TEXT, TEXT);
