ALTER TABLE payments DROP COLUMN merchant_binding;
