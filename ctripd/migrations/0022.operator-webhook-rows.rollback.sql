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
DROP FUNCTION event_targets(TEXT, TEXT, TEXT, BOOLEAN);
