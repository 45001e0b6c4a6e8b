-- The deliveries to merchants' endpoints go with them: left as rows without an endpoint_id, they
-- would be claimed as deliveries to the `[webhooks] url`.
DELETE FROM events WHERE endpoint_id IS NOT NULL;
DROP FUNCTION event_targets(TEXT, TEXT, TEXT);
ALTER TABLE events DROP COLUMN endpoint_id;
DROP TABLE webhook_endpoints;
