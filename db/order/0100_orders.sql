-- Orders are event-sourced: order_events is the truth, orders is a projection of it that
-- can be rebuilt at any time (OrderStore::rebuild_projection).
CREATE TABLE order_events (
    seq            BIGSERIAL NOT NULL UNIQUE,
    aggregate_id   UUID NOT NULL,
    version        BIGINT NOT NULL CHECK (version > 0),
    event_type     TEXT NOT NULL,
    payload        JSONB NOT NULL,
    recorded_at    TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (aggregate_id, version)
);

CREATE TABLE orders (
    order_id              UUID PRIMARY KEY,
    saga_id               UUID NOT NULL UNIQUE,
    customer_id           TEXT NOT NULL,
    pet_id                TEXT NOT NULL,
    amount                NUMERIC(12, 2) NOT NULL CHECK (amount >= 0),
    currency              TEXT NOT NULL,
    shipping_address      JSONB NOT NULL,
    payment_method        TEXT NOT NULL,
    special_instructions  TEXT,
    status                TEXT NOT NULL CHECK (status IN ('pending', 'confirmed', 'cancelled')),
    cancel_reason         TEXT,
    created_at            TIMESTAMPTZ NOT NULL,
    updated_at            TIMESTAMPTZ NOT NULL,
    version               BIGINT NOT NULL
);

CREATE INDEX orders_customer ON orders (customer_id, created_at DESC);

CREATE TRIGGER orders_audit AFTER INSERT OR UPDATE OR DELETE ON orders
    FOR EACH ROW EXECUTE FUNCTION audit_row();
