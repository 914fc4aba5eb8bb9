-- Every notification sent to a customer: the record is the sent message. One of each kind
-- per saga, so a repeated command never notifies the customer twice.
CREATE TABLE notifications (
    notification_id  UUID PRIMARY KEY,
    saga_id          UUID NOT NULL,
    order_id         UUID NOT NULL,
    customer_id      TEXT NOT NULL,
    kind             TEXT NOT NULL CHECK (kind IN ('confirmation', 'cancellation_notice')),
    channel          TEXT NOT NULL CHECK (channel IN ('email', 'sms', 'push')),
    subject          TEXT NOT NULL,
    body             TEXT NOT NULL,
    sent_at          TIMESTAMPTZ NOT NULL,
    CONSTRAINT notifications_one_per_kind UNIQUE (saga_id, kind)
);

-- Serves `GET /notifications?customer_id=`, newest first.
CREATE INDEX notifications_customer_id ON notifications (customer_id, sent_at DESC);
CREATE INDEX notifications_order_id ON notifications (order_id);

CREATE TRIGGER notifications_audit AFTER INSERT OR UPDATE OR DELETE ON notifications
    FOR EACH ROW EXECUTE FUNCTION audit_row();
