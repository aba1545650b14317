-- Issue 11 "Trust": agent owners (registry authorization) and the tamper-evident audit chain.

-- Who may manage an agent besides an admin: the principal that created it. NULL for agents
-- created before this migration: only an admin may manage those.
ALTER TABLE agents ADD COLUMN owner TEXT;

-- The audit chain (capecontrol_core::audit): each row carries its position `seq` (from 1,
-- without gaps), the previous row's hash and its own hash, SHA-256 over the canonical form that
-- capecontrol_audit_hash renders (the text of a jsonb array; the Rust side renders the same
-- bytes to verify).
ALTER TABLE audit_events ADD COLUMN seq BIGINT, ADD COLUMN prev_hash TEXT, ADD COLUMN hash TEXT;
CREATE UNIQUE INDEX idx_audit_events_seq ON audit_events(seq);

-- The head of the chain: one row, locked (FOR UPDATE) by the transaction that appends to the
-- chain, at its commit.
CREATE TABLE audit_chain (
  id BOOLEAN PRIMARY KEY DEFAULT true CHECK (id),
  seq BIGINT NOT NULL,
  hash TEXT NOT NULL
);
INSERT INTO audit_chain VALUES (true, 0, repeat('0', 64));

CREATE FUNCTION capecontrol_audit_hash(r audit_events) RETURNS TEXT AS $$
  SELECT encode(sha256(convert_to(jsonb_build_array(
    r.seq, r.prev_hash, r.id, (extract(epoch FROM r.created_at) * 1000000)::bigint,
    r.task_id, r.agent_id, r.user_id, r.event_type, r.payload, host(r.ip_address),
    r.user_agent)::text, 'UTF8')), 'hex');
$$ LANGUAGE sql IMMUTABLE;

-- The rows written before this migration are chained in id order.
DO $$
DECLARE
  r audit_events;
  h_seq BIGINT := 0;
  h_hash TEXT := repeat('0', 64);
BEGIN
  FOR r IN SELECT * FROM audit_events ORDER BY id LOOP
    r.seq := h_seq + 1;
    r.prev_hash := h_hash;
    r.hash := capecontrol_audit_hash(r);
    UPDATE audit_events SET seq = r.seq, prev_hash = r.prev_hash, hash = r.hash WHERE id = r.id;
    h_seq := r.seq;
    h_hash := r.hash;
  END LOOP;
  UPDATE audit_chain SET seq = h_seq, hash = h_hash;
END $$;

-- Seals a new row into the chain. A deferred constraint trigger: it runs at the commit of the
-- inserting transaction, whatever statement inserted the row (the queue's functions included),
-- after every other lock of that transaction was taken — so the head's row lock is the last
-- lock of every appender (no deadlock) and is held only through the commit. Rows are chained
-- in commit order.
CREATE FUNCTION capecontrol_audit_seal() RETURNS trigger AS $$
DECLARE
  h audit_chain;
  r audit_events;
BEGIN
  SELECT * INTO h FROM audit_chain WHERE id FOR UPDATE;
  SELECT * INTO r FROM audit_events WHERE id = NEW.id;
  IF NOT FOUND OR r.seq IS NOT NULL THEN
    RETURN NULL;
  END IF;
  r.seq := h.seq + 1;
  r.prev_hash := h.hash;
  r.hash := capecontrol_audit_hash(r);
  UPDATE audit_events SET seq = r.seq, prev_hash = r.prev_hash, hash = r.hash WHERE id = r.id;
  UPDATE audit_chain SET seq = r.seq, hash = r.hash WHERE id;
  RETURN NULL;
END;
$$ LANGUAGE plpgsql;

CREATE CONSTRAINT TRIGGER audit_events_chain AFTER INSERT ON audit_events
  DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION capecontrol_audit_seal();
