DROP FUNCTION event_targets(TEXT, TEXT, TEXT);
ALTER TABLE events DROP COLUMN endpoint_id;
DROP TABLE webhook_endpoints;
