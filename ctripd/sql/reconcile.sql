-- name: deposit_addresses
-- The chain's payments' addresses, and those of other chains' payments that received funds on it.
SELECT address FROM payments WHERE chain = $1
UNION
SELECT p.address FROM transfers t JOIN payments p ON p.id = t.payment_id
WHERE t.chain = $1 AND p.chain <> $1
ORDER BY address;

-- name: credited
-- Live incoming transfers up to block $2 per deposit address and asset (token NULL: native).
-- Our own gas top-ups count as top-ups, not credits, should the watcher record them too.
SELECT p.address, lower(t.token_address) AS token, sum(t.amount) AS amount
FROM transfers t JOIN payments p ON p.id = t.payment_id
WHERE t.chain = $1 AND t.status = 'live' AND t.block_number <= $2
  AND lower(t.tx_hash) NOT IN (
      SELECT lower(v.tx_hash) FROM sweep_txs v JOIN sweeps s ON s.id = v.sweep_id
      WHERE s.chain = $1 AND s.kind = 'gas_topup')
GROUP BY p.address, lower(t.token_address);

-- name: held
-- Live transfers up to block $2 that the sweeper leaves where they are, per payment and asset:
-- in an asset their payment does not count on this chain (`payment_assets`: sent on this chain
-- for a payment of another, or in another asset than the payment's or its options'), or to a
-- payment that expired or was canceled, less what confirmed recoveries and refunds took. They
-- may be owed back to the payer, an operator's decision. `other_chain`: the payment counts
-- nothing here.
WITH transfer AS (
    SELECT p.address, p.id AS payment_id, p.status, p.chain AS payment_chain,
           lower(t.token_address) AS token, t.amount,
           EXISTS (SELECT 1 FROM payment_assets a
                   WHERE a.payment_id = p.id AND a.chain = t.chain) AS on_chain,
           EXISTS (SELECT 1 FROM payment_assets a
                   WHERE a.payment_id = p.id AND a.chain = t.chain
                     AND lower(coalesce(a.token_address, ''))
                         = lower(coalesce(t.token_address, ''))) AS counted
    FROM transfers t JOIN payments p ON p.id = t.payment_id
    WHERE t.chain = $1 AND t.status = 'live' AND t.block_number <= $2
), held AS (
    SELECT address, payment_id, status, token, payment_chain, NOT on_chain AS other_chain,
           NOT counted AS other_asset, sum(amount) AS amount
    FROM transfer
    WHERE NOT counted OR status IN ('expired', 'canceled')
    GROUP BY address, payment_id, status, token, payment_chain, on_chain, counted
), recovered AS (
    -- Recoveries done and refunds confirmed (from the deposit or, once swept, the payout
    -- wallet: either way the payer has it back).
    SELECT r.payment_id, lower(r.token_address) AS token, sum(r.amount) AS amount
    FROM (SELECT payment_id, token_address, amount, sweep_id FROM recoveries
          WHERE chain = $1 AND status = 'done'
          UNION ALL
          SELECT payment_id, token_address, amount, sweep_id FROM refunds
          WHERE chain = $1 AND status = 'confirmed') r
    JOIN sweeps s ON s.id = r.sweep_id
    WHERE s.block_number <= $2
    GROUP BY r.payment_id, lower(r.token_address)
)
SELECT h.address, h.payment_id, h.status, h.token, h.payment_chain, h.other_chain,
       h.other_asset, h.amount - coalesce(v.amount, 0) AS amount
FROM held h
LEFT JOIN recovered v ON v.payment_id = h.payment_id AND v.token IS NOT DISTINCT FROM h.token
WHERE h.amount - coalesce(v.amount, 0) > 0
ORDER BY h.address, h.payment_id, h.token NULLS FIRST;

-- name: swept_out
-- Confirmed sweeps, recoveries and refunds mined up to block $2, per deposit address and asset
-- (a refund from the payout wallet is no deposit's). A batch's part: what its receipt showed
-- each swept deposit move. Someone else's trigger of the delegate: what its booked `Swept` log
-- showed move.
SELECT address, token, sum(amount) AS amount FROM (
    SELECT from_address AS address, lower(token_address) AS token, amount
    FROM sweeps
    WHERE chain = $1 AND kind IN ('native', 'token', 'recover', 'refund') AND status = 'confirmed'
      AND block_number <= $2
    UNION ALL
    SELECT e.address, lower(e.token_address), e.moved
    FROM sweep_entries e JOIN sweeps s ON s.id = e.sweep_id
    WHERE s.chain = $1 AND s.status = 'confirmed' AND s.block_number <= $2
      AND e.status = 'swept'
    UNION ALL
    SELECT address, lower(token_address), amount
    FROM outside_sweeps
    WHERE chain = $1 AND block_number <= $2) moved
GROUP BY address, token;

-- name: fees_paid
-- Gas paid by deposit addresses up to block $2: confirmed and reverted sweeps alike.
SELECT from_address AS address, sum(fee) AS amount
FROM sweeps
WHERE chain = $1 AND kind IN ('native', 'token', 'recover', 'refund') AND block_number <= $2
  AND fee IS NOT NULL
GROUP BY from_address;

-- name: topped_up
SELECT to_address AS address, sum(amount) AS amount
FROM sweeps
WHERE chain = $1 AND kind = 'gas_topup' AND status = 'confirmed' AND block_number <= $2
GROUP BY to_address;

-- name: in_flight
-- Unfinished sweeps' senders and recipients, and the deposits of unfinished batches.
SELECT from_address, to_address FROM sweeps
WHERE chain = $1 AND status IN ('signed', 'broadcast')
UNION ALL
SELECT e.address, e.address FROM sweep_entries e JOIN sweeps s ON s.id = e.sweep_id
WHERE s.chain = $1 AND s.status IN ('signed', 'broadcast');

-- name: scanned_block
SELECT scanned_block FROM chains WHERE name = $1;

-- name: asset_totals
-- Per asset (token NULL: native), up to block $2: what deposits received (live transfers), what
-- left them by sweeps to a treasury, by refunds and by recoveries (confirmed), and the fees
-- they paid. What is still at them follows: received + top-ups − all of those.
WITH received AS (
    SELECT lower(t.token_address) AS token, sum(t.amount) AS amount
    FROM transfers t
    WHERE t.chain = $1 AND t.status = 'live' AND t.block_number <= $2
      AND lower(t.tx_hash) NOT IN (
          SELECT lower(v.tx_hash) FROM sweep_txs v JOIN sweeps s ON s.id = v.sweep_id
          WHERE s.chain = $1 AND s.kind = 'gas_topup')
    GROUP BY lower(t.token_address)
), moved AS (
    SELECT lower(token_address) AS token,
           CASE WHEN kind = 'recover' THEN 'recover' ELSE 'sweep' END AS kind, amount
    FROM sweeps
    WHERE chain = $1 AND kind IN ('native', 'token', 'recover') AND status = 'confirmed'
      AND block_number <= $2
    UNION ALL
    SELECT lower(e.token_address), 'sweep', e.moved
    FROM sweep_entries e JOIN sweeps s ON s.id = e.sweep_id
    WHERE s.chain = $1 AND s.status = 'confirmed' AND s.block_number <= $2 AND e.status = 'swept'
    UNION ALL
    SELECT lower(s.token_address), 'refund', s.amount
    FROM refunds r JOIN sweeps s ON s.id = r.sweep_id
    WHERE r.chain = $1 AND r.status = 'confirmed' AND r.source = 'deposit'
      AND s.block_number <= $2
), tokens AS (
    SELECT token FROM received UNION SELECT token FROM moved
)
SELECT k.token,
       coalesce((SELECT amount FROM received r WHERE r.token IS NOT DISTINCT FROM k.token), 0)
           AS received,
       coalesce((SELECT sum(amount) FROM moved m
                 WHERE m.token IS NOT DISTINCT FROM k.token AND m.kind = 'sweep'),
                0) AS swept,
       coalesce((SELECT sum(amount) FROM moved m
                 WHERE m.token IS NOT DISTINCT FROM k.token AND m.kind = 'refund'), 0)
           AS refunded,
       coalesce((SELECT sum(amount) FROM moved m
                 WHERE m.token IS NOT DISTINCT FROM k.token AND m.kind = 'recover'), 0)
           AS recovered
FROM tokens k
ORDER BY k.token NULLS FIRST;

-- name: wallet_out
-- What address $3 sent on chain $1 up to block $2 in confirmed payouts and refunds, per asset,
-- and the fees all its transactions paid (native).
SELECT lower(token_address) AS token,
       coalesce(sum(amount) FILTER (WHERE kind = 'payout' AND status = 'confirmed'), 0)
           AS payouts,
       coalesce(sum(amount) FILTER (WHERE kind = 'refund' AND status = 'confirmed'), 0)
           AS refunds,
       coalesce(sum(fee), 0) AS fees
FROM sweeps
WHERE chain = $1 AND from_address = $3 AND block_number <= $2
GROUP BY lower(token_address)
ORDER BY lower(token_address) NULLS FIRST;
