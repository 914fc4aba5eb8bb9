-- What POST /orders answered to each (customer, Idempotency-Key), written in the transaction
-- that places the order, so a retry with the same key replays that answer instead of placing
-- a second order. The primary key is what settles two concurrent requests with one key: the
-- second insert waits for the first transaction and then fails on it (OrderStore::place).
-- Rows older than the retention (24 h) no longer count and are purged periodically.
CREATE TABLE idempotency_keys (
    customer_id     TEXT NOT NULL,
    key             TEXT NOT NULL CHECK (length(key) BETWEEN 1 AND 255),
    -- SHA-256 (hex) of the canonical JSON of the validated request.
    fingerprint     TEXT NOT NULL,
    order_id        UUID NOT NULL,
    saga_id         UUID NOT NULL,
    status          TEXT NOT NULL,
    correlation_id  TEXT NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL,
    CONSTRAINT idempotency_keys_pkey PRIMARY KEY (customer_id, key)
);

CREATE INDEX idempotency_keys_created_at ON idempotency_keys (created_at);
