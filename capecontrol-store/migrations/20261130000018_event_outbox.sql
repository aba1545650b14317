-- Events emitted inside a host's transaction (`PostgresStore::emit_in`): written with the host's
-- own work, drained after commit through `Platform::emit` (idempotent per event id) and marked done.
CREATE TABLE event_outbox (
  seq BIGSERIAL PRIMARY KEY,
  event_id TEXT NOT NULL,
  name TEXT NOT NULL,
  payload JSONB NOT NULL,
  principal JSONB NOT NULL,
  created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
  done_at TIMESTAMPTZ
);

CREATE INDEX event_outbox_pending ON event_outbox (seq) WHERE done_at IS NULL;
