-- name: deposit_of
-- A payment with an asset (`payment_assets`) on chain $1 at address $2, derived at index $3, in
-- asset $4 (NULL: any asset, for native coin at the address): its id, merchant, chain and binding
-- to that merchant, that merchant's own treasury on chain $1 with its approval (NULL: none), and
-- whether a token asset of a payment is at the address on chain $1 (its native coin is top-up
-- change, the operator's).
SELECT p.id, p.merchant, p.chain, p.address_index, p.merchant_binding,
       mt.address AS treasury, mt.approval,
       EXISTS (SELECT 1 FROM payments q JOIN payment_assets b ON b.payment_id = q.id
               WHERE lower(q.address) = lower($2) AND b.chain = $1
                 AND b.token_address IS NOT NULL) AS token_payment
FROM payments p
JOIN payment_assets a ON a.payment_id = p.id
LEFT JOIN merchant_treasuries mt ON mt.merchant = p.merchant AND mt.chain = $1
WHERE lower(p.address) = lower($2) AND a.chain = $1 AND p.address_index = $3
  AND ($4::text IS NULL OR lower(a.token_address) = lower($4))
LIMIT 1;

-- name: top_up_target
-- A confirmed payment with a token asset on chain $1 at address $2, or an approved recovery or
-- a requested refund of tokens there.
SELECT EXISTS (
    SELECT 1 FROM payments p JOIN payment_assets a ON a.payment_id = p.id
    WHERE lower(p.address) = lower($2) AND a.chain = $1 AND a.token_address IS NOT NULL
      AND a.status = 'confirmed')
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
-- A confirmed payment with funds confirmed at address $2 on chain $1 in asset $4 (NULL: native
-- coin; `payment_assets`), derived at index $3, with what `treasury_of` needs.
SELECT p.id, p.merchant, p.chain, p.address_index, p.merchant_binding,
       mt.address AS treasury, mt.approval
FROM payments p
JOIN payment_assets a ON a.payment_id = p.id
LEFT JOIN merchant_treasuries mt ON mt.merchant = p.merchant AND mt.chain = $1
WHERE lower(p.address) = lower($2) AND a.chain = $1 AND p.address_index = $3
  AND a.status = 'confirmed' AND a.confirmed > 0
  AND lower(coalesce(a.token_address, '')) = lower(coalesce($4::text, ''))
LIMIT 1;
