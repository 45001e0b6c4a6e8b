-- name: insert_event
INSERT INTO events (id, payment_id, merchant, type, payload, created_at)
VALUES ($1, $2, $3, $4, $5, $6);
