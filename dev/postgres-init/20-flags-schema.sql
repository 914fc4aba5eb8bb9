-- The `flags` schema (compose deployment): administrators' feature-flag overrides and their
-- audit trail, shared by every service. Every service process also runs the flag
-- administration (libs/persistence/src/flags.rs): with its own login (`database.url`) it
-- connects with search_path=flags, runs `CREATE SCHEMA IF NOT EXISTS flags`, creates
-- flags._migrations_common / flags._migrations if missing, applies db/common and db/flags
-- (tables, a sequence, trigger functions, triggers) — whichever service takes sqlx's
-- migration lock first does it — and then reads and writes flag_overrides, audit_log (from
-- a trigger) and audit_trail.
--
-- So the schema belongs to a group role, `flags`, that every service role is a member of
-- (INHERIT, the default): each member has the owner's rights on the schema (USAGE, CREATE).
-- Two more rules make the objects the first migrator creates usable by all the others:
--   1. default privileges: whatever a service role creates in `flags` is granted in full to
--      the group (tables, sequences, functions), so every member may read and write it;
--   2. an event trigger hands each table and function created in `flags` over to the group,
--      so every member is also its owner: a later migration that ALTERs a table or replaces
--      a function works whichever service happens to run it.
-- No service role gets any right on another service's own schema.
CREATE ROLE flags NOLOGIN;
GRANT flags TO inventory, orders, payment, delivery, notification, orchestrator;
CREATE SCHEMA flags AUTHORIZATION flags;

ALTER DEFAULT PRIVILEGES FOR ROLE inventory, orders, payment, delivery, notification, orchestrator
    IN SCHEMA flags GRANT ALL ON TABLES TO flags;
ALTER DEFAULT PRIVILEGES FOR ROLE inventory, orders, payment, delivery, notification, orchestrator
    IN SCHEMA flags GRANT ALL ON SEQUENCES TO flags;
ALTER DEFAULT PRIVILEGES FOR ROLE inventory, orders, payment, delivery, notification, orchestrator
    IN SCHEMA flags GRANT EXECUTE ON FUNCTIONS TO flags;

-- Runs as its owner (the superuser that runs these scripts) at the end of every DDL command,
-- and acts only on tables and functions just created in `flags`. ALTER TABLE … OWNER also
-- moves the table's indexes and serial sequences; other objects (triggers) have no owner.
CREATE FUNCTION public.flags_objects_to_group() RETURNS event_trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $$
DECLARE
    created record;
BEGIN
    FOR created IN
        SELECT object_type, object_identity FROM pg_event_trigger_ddl_commands()
        WHERE schema_name = 'flags' AND command_tag IN ('CREATE TABLE', 'CREATE FUNCTION')
              AND object_type IN ('table', 'function')
    LOOP
        IF created.object_type = 'table' THEN
            EXECUTE format('ALTER TABLE %s OWNER TO flags', created.object_identity);
        ELSE
            EXECUTE format('ALTER FUNCTION %s OWNER TO flags', created.object_identity);
        END IF;
    END LOOP;
END $$;
REVOKE ALL ON FUNCTION public.flags_objects_to_group() FROM PUBLIC;

CREATE EVENT TRIGGER flags_objects_to_group ON ddl_command_end
    WHEN TAG IN ('CREATE TABLE', 'CREATE FUNCTION')
    EXECUTE FUNCTION public.flags_objects_to_group();
