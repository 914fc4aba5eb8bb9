-- A refund that finds no payment for its saga leaves a tombstone: a `voided` payment, so that
-- a `ProcessPayment` arriving later (delayed, redelivered, replayed from the dead-letter queue)
-- charges nothing. The tombstone lives in this table rather than in a table of its own so that
-- `payments_one_per_saga` arbitrates a charge and a void racing for the same saga (one insert
-- wins, the other is retried and sees it) and the row lock both commands take covers both.
-- A `RefundPayment` carries only the saga, so a voided row has no customer, currency or method,
-- and its amount is 0: nothing was charged.
ALTER TABLE payments DROP CONSTRAINT payments_status_check;
ALTER TABLE payments ADD CONSTRAINT payments_status_check
    CHECK (status IN ('charged', 'declined', 'refunded', 'voided'));

ALTER TABLE payments
    ALTER COLUMN customer_id DROP NOT NULL,
    ALTER COLUMN currency DROP NOT NULL,
    ALTER COLUMN payment_method DROP NOT NULL;

ALTER TABLE payments ADD CONSTRAINT payments_charge_details_unless_voided CHECK (
    status = 'voided'
    OR (customer_id IS NOT NULL AND currency IS NOT NULL AND payment_method IS NOT NULL)
);
ALTER TABLE payments ADD CONSTRAINT payments_voided_charges_nothing CHECK (status <> 'voided' OR amount = 0);
