-- The relay is woken by the process that committed the messages, no longer by NOTIFY: a
-- notifying transaction holds PostgreSQL's one cluster-wide notification lock from its commit
-- until its WAL is flushed, so every transaction that wrote to any outbox waited for the
-- flushes of the others in turn. The relay still polls, for rows another replica wrote.
DROP TRIGGER outbox_notify ON outbox;
DROP FUNCTION outbox_notify();
