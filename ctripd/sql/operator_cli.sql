-- name: list_payments
-- The operator's view: every merchant's payments (or one merchant's), newest first. Kept apart
-- from payments.list_payments so that the API's merchant-scoped plan stays as it is.
SELECT p.*, c.head
FROM payments p LEFT JOIN chains c ON c.name = p.chain
WHERE ($1::text IS NULL OR p.merchant = $1)
  AND ($2::text IS NULL OR p.status = $2)
  AND ($3::text IS NULL OR p.chain = $3)
  AND ($4::text IS NULL OR p.order_id = $4)
ORDER BY p.created_at DESC, p.id DESC
LIMIT $5;
