-- One delivery per saga: where the pet goes, when it is expected, and its cancellation.
CREATE TABLE deliveries (
    delivery_id         UUID PRIMARY KEY,
    saga_id             UUID NOT NULL,
    order_id            UUID NOT NULL,
    customer_id         TEXT NOT NULL,
    pet_id              TEXT NOT NULL,
    street              TEXT NOT NULL,
    city                TEXT NOT NULL,
    postal_code         TEXT NOT NULL,
    country             TEXT NOT NULL,
    status              TEXT NOT NULL CHECK (status IN ('scheduled', 'cancelled')),
    estimated_delivery  DATE NOT NULL,
    created_at          TIMESTAMPTZ NOT NULL,
    cancelled_at        TIMESTAMPTZ,
    CONSTRAINT deliveries_one_per_saga UNIQUE (saga_id)
);

CREATE INDEX deliveries_order_id ON deliveries (order_id);

CREATE TRIGGER deliveries_audit AFTER INSERT OR UPDATE OR DELETE ON deliveries
    FOR EACH ROW EXECUTE FUNCTION audit_row();
