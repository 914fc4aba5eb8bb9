-- Who did what through the API: one row per state-changing request and per admin action,
-- with its outcome. (audit_log, beside it, is the row history the triggers write.)
CREATE TABLE audit_trail (
    id              UUID PRIMARY KEY,
    at              TIMESTAMPTZ NOT NULL,
    service         TEXT NOT NULL,
    actor           TEXT NOT NULL,
    roles           TEXT[] NOT NULL,
    action          TEXT NOT NULL,
    target          TEXT,
    correlation_id  TEXT NOT NULL,
    status          SMALLINT NOT NULL
);

CREATE INDEX audit_trail_at ON audit_trail (at DESC, id DESC);
CREATE INDEX audit_trail_actor ON audit_trail (actor, at DESC);
