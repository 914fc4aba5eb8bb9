-- A saga's end is announced (NOTIFY orchestrator_saga_ended, payload: its order id) when the
-- transaction that ended it commits, so that every orchestrator instance wakes the requests
-- waiting for it (GET /orders/{id}/status?wait=) at once instead of looking again and again.
CREATE FUNCTION announce_saga_end() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify('orchestrator_saga_ended', NEW.order_id::text);
  RETURN NEW;
END
$$;

CREATE TRIGGER sagas_announce_end
  AFTER INSERT OR UPDATE OF ended_at ON sagas
  FOR EACH ROW
  WHEN (NEW.ended_at IS NOT NULL)
  EXECUTE FUNCTION announce_saga_end();
