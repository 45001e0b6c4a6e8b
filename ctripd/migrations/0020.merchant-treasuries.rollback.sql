DROP TABLE merchant_treasuries;
