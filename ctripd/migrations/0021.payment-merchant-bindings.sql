-- A payment's binding to its merchant: an HMAC under the wallet's approval key (which only the
-- mnemonic gives) of its id, merchant, chain and derivation index, made by the API when it
-- creates the payment. The signing policy sends a payment's sweep to its merchant's own
-- treasury only while this verifies, so rewriting `payments.merchant` moves nothing. NULL
-- (payments made before, or by a watch-only API): the chain's treasury.
-- depends: 0020.merchant-treasuries

ALTER TABLE payments ADD COLUMN merchant_binding BYTEA;
