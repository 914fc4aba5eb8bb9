CREATE TABLE thing_events (
    seq            BIGSERIAL NOT NULL UNIQUE,
    aggregate_id   UUID NOT NULL,
    version        BIGINT NOT NULL,
    event_type     TEXT NOT NULL,
    payload        JSONB NOT NULL,
    recorded_at    TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (aggregate_id, version)
);
CREATE TABLE counters (name TEXT PRIMARY KEY, value BIGINT NOT NULL);
