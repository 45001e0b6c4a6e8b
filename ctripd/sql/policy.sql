-- name: deposit_of
-- A payment of chain $1 at address $2, derived at index $3, in asset $4 (NULL: any asset, for
-- native coin at the address): its id, merchant and binding to that merchant, that merchant's own
-- treasury on the chain with its approval (NULL: none), and whether a token payment is at the address (its native coin is
-- top-up change, the operator's).
SELECT p.id, p.merchant, p.chain, p.address_index, p.merchant_binding,
       mt.address AS treasury, mt.approval,
       EXISTS (SELECT 1 FROM payments q
               WHERE lower(q.address) = lower($2) AND q.chain = $1
                 AND q.token_address IS NOT NULL) AS token_payment
FROM payments p
LEFT JOIN merchant_treasuries mt ON mt.merchant = p.merchant AND mt.chain = p.chain
WHERE lower(p.address) = lower($2) AND p.chain = $1 AND p.address_index = $3
  AND ($4::text IS NULL OR lower(p.token_address) = lower($4))
LIMIT 1;

-- name: top_up_target
-- A confirmed token payment of chain $1 at address $2, or an approved recovery or a requested
-- refund of tokens there.
SELECT EXISTS (
    SELECT 1 FROM payments
    WHERE lower(address) = lower($2) AND chain = $1 AND token_address IS NOT NULL
      AND status = 'confirmed')
    OR EXISTS (
    SELECT 1 FROM recoveries r JOIN payments p ON p.id = r.payment_id
    WHERE lower(p.address) = lower($2) AND r.chain = $1 AND r.token_address IS NOT NULL
      AND r.status = 'approved')
    OR EXISTS (
    SELECT 1 FROM refunds f JOIN payments p ON p.id = f.payment_id
    WHERE lower(p.address) = lower($2) AND f.chain = $1 AND f.token_address IS NOT NULL
      AND f.status = 'requested');

-- name: recovery
SELECT r.*, p.address, p.address_index
FROM recoveries r JOIN payments p ON p.id = r.payment_id
WHERE r.id = $1;

-- name: merchant_treasuries_at
-- The merchants' treasuries of chain $1 at address $2, with their approvals.
SELECT merchant, address, approval FROM merchant_treasuries
WHERE chain = $1 AND lower(address) = lower($2);

-- name: delegate_of
-- The sweep delegate recorded for treasury $2 on chain $1.
SELECT address FROM sweep_delegates WHERE chain = $1 AND treasury = $2;

-- name: confirmed_deposit
-- A confirmed payment of chain $1 with funds at address $2, derived at index $3, in asset $4
-- (NULL: native coin), with what `treasury_of` needs.
SELECT p.id, p.merchant, p.chain, p.address_index, p.merchant_binding,
       mt.address AS treasury, mt.approval
FROM payments p
LEFT JOIN merchant_treasuries mt ON mt.merchant = p.merchant AND mt.chain = p.chain
WHERE lower(p.address) = lower($2) AND p.chain = $1 AND p.address_index = $3
  AND p.status = 'confirmed' AND p.amount_confirmed > 0
  AND lower(coalesce(p.token_address, '')) = lower(coalesce($4::text, ''))
LIMIT 1;
