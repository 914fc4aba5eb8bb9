-- Feature flag definitions set by administrators (PUT /admin/flags/{flag}), in force in every
-- instance over the flag file's. DELETE /admin/flags/{flag} removes the row: the file's
-- definition is in force again. Every change keeps its before and after in audit_log.
CREATE TABLE flag_overrides (
    flag        TEXT PRIMARY KEY,
    definition  JSONB NOT NULL,
    changed_by  TEXT NOT NULL,
    changed_at  TIMESTAMPTZ NOT NULL
);

CREATE TRIGGER flag_overrides_audit AFTER INSERT OR UPDATE OR DELETE ON flag_overrides
    FOR EACH ROW EXECUTE FUNCTION audit_row();
