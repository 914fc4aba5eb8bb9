-- One payment per saga: the charge, its outcome, and its refund.
CREATE TABLE payments (
    payment_id      UUID PRIMARY KEY,
    saga_id         UUID NOT NULL,
    order_id        UUID NOT NULL,
    customer_id     TEXT NOT NULL,
    amount          NUMERIC(12, 2) NOT NULL CHECK (amount >= 0),
    currency        TEXT NOT NULL,
    payment_method  TEXT NOT NULL,
    status          TEXT NOT NULL CHECK (status IN ('charged', 'declined', 'refunded')),
    decline_reason  TEXT,
    created_at      TIMESTAMPTZ NOT NULL,
    refunded_at     TIMESTAMPTZ,
    CONSTRAINT payments_one_per_saga UNIQUE (saga_id)
);

CREATE INDEX payments_order_id ON payments (order_id);

CREATE TRIGGER payments_audit AFTER INSERT OR UPDATE OR DELETE ON payments
    FOR EACH ROW EXECUTE FUNCTION audit_row();
