-- Tables every service schema has. Runs with search_path set to the service's schema.

-- Transactional outbox: messages written in the same transaction as the state change that
-- produced them, published by the relay in `seq` order, deleted once the bus accepted them.
CREATE TABLE outbox (
    seq            BIGSERIAL PRIMARY KEY,
    message_id     UUID NOT NULL UNIQUE,
    channel        TEXT NOT NULL,
    envelope       JSONB NOT NULL,
    created_at     TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Wake the relay as soon as a message is committed (it also polls, as a fallback).
-- Functions pin search_path to the schema they were created in, so that the triggers work
-- for any connection, whatever its own search_path.
CREATE FUNCTION outbox_notify() RETURNS trigger LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    PERFORM pg_notify(TG_TABLE_SCHEMA || '_outbox', '');
    RETURN NULL;
END $$;

CREATE TRIGGER outbox_notify AFTER INSERT ON outbox
    FOR EACH STATEMENT EXECUTE FUNCTION outbox_notify();

-- Inbox: ids of messages a consumer has processed, recorded in the same transaction as the
-- state change, so a redelivered message is recognised and skipped.
CREATE TABLE inbox (
    consumer       TEXT NOT NULL,
    message_id     UUID NOT NULL,
    message_type   TEXT NOT NULL,
    processed_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, message_id)
);

-- Audit trail written by triggers on the service's own tables.
CREATE TABLE audit_log (
    id             BIGSERIAL PRIMARY KEY,
    table_name     TEXT NOT NULL,
    operation      TEXT NOT NULL,
    row_data       JSONB,
    old_row_data   JSONB,
    changed_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    changed_by     TEXT NOT NULL DEFAULT current_user
);

CREATE FUNCTION audit_row() RETURNS trigger LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    INSERT INTO audit_log (table_name, operation, row_data, old_row_data)
    VALUES (
        TG_TABLE_NAME,
        TG_OP,
        CASE WHEN TG_OP = 'DELETE' THEN NULL ELSE to_jsonb(NEW) END,
        CASE WHEN TG_OP = 'INSERT' THEN NULL ELSE to_jsonb(OLD) END
    );
    RETURN NULL;
END $$;
