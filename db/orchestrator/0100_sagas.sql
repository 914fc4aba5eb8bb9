-- Saga instances are event-sourced: saga_events is the saga log; sagas is its projection
-- for lookups by order and by status.
CREATE TABLE saga_events (
    seq            BIGSERIAL NOT NULL UNIQUE,
    aggregate_id   UUID NOT NULL,
    version        BIGINT NOT NULL CHECK (version > 0),
    event_type     TEXT NOT NULL,
    payload        JSONB NOT NULL,
    recorded_at    TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (aggregate_id, version)
);

CREATE TABLE sagas (
    saga_id        UUID PRIMARY KEY,
    order_id       UUID NOT NULL UNIQUE,
    customer_id    TEXT NOT NULL,
    status         TEXT NOT NULL CHECK (status IN ('running', 'compensating', 'completed', 'compensated', 'failed')),
    reason         TEXT,
    started_at     TIMESTAMPTZ NOT NULL,
    updated_at     TIMESTAMPTZ NOT NULL,
    ended_at       TIMESTAMPTZ,
    version        BIGINT NOT NULL
);

CREATE INDEX sagas_status ON sagas (status) WHERE status IN ('running', 'compensating');

CREATE TRIGGER sagas_audit AFTER INSERT OR UPDATE OR DELETE ON sagas
    FOR EACH ROW EXECUTE FUNCTION audit_row();
