-- Dead letters of every channel, collected by the orchestrator from the `<channel>.dlq`
-- channels so that operators can list and replay them (GET /admin/dlq,
-- POST /admin/dlq/{id}/replay). One row per message: a message dead-lettered again after a
-- replay updates its row.
CREATE TABLE dead_letters (
    id                UUID PRIMARY KEY,      -- the dead-lettered message's id
    channel           TEXT NOT NULL,         -- where it was consumed from; a replay goes back there
    consumer_group    TEXT NOT NULL,         -- the group that gave up on it
    error             TEXT NOT NULL,
    attempts          BIGINT NOT NULL CHECK (attempts >= 0),
    dead_lettered_at  TIMESTAMPTZ NOT NULL,
    message_type      TEXT NOT NULL,
    message           JSONB NOT NULL,        -- the original message, CloudEvents JSON
    replayed_at       TIMESTAMPTZ,           -- the latest replay since it was dead-lettered
    replay_count      INTEGER NOT NULL DEFAULT 0 CHECK (replay_count >= 0)
);

-- GET /admin/dlq pages newest first.
CREATE INDEX dead_letters_newest ON dead_letters (dead_lettered_at DESC, id DESC);
-- The gauges count what waits for a replay, per channel.
CREATE INDEX dead_letters_waiting ON dead_letters (channel, dead_lettered_at) WHERE replayed_at IS NULL;

CREATE TRIGGER dead_letters_audit AFTER INSERT OR UPDATE OR DELETE ON dead_letters
    FOR EACH ROW EXECUTE FUNCTION audit_row();
