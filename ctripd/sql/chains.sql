-- name: upsert_chain
INSERT INTO chains (name, chain_id) VALUES ($1, $2)
ON CONFLICT (name) DO UPDATE SET chain_id = EXCLUDED.chain_id
RETURNING *;

-- name: record_head
UPDATE chains SET head = $2, head_seen_at = now() WHERE name = $1;

-- name: all_chains
SELECT * FROM chains ORDER BY name;
