-- The audit chain without a global lock at every commit (issue 12).
--
-- Until now a deferred row trigger sealed each new audit row into the chain at the commit of
-- the transaction that inserted it: it locked the chain's head row (`audit_chain`) and held it
-- through that commit. Every transaction writing an audit row — each enqueue, claim, journal
-- batch and finish — therefore committed one after the other, each waiting for its own WAL
-- flush: the whole cluster's writes were serialized behind one row lock, and PostgreSQL's group
-- commit could never gather them.
--
-- Now an insert only marks its row `pending` (a cheap BEFORE trigger, no lock), and rows are
-- sealed afterwards in batches by `capecontrol_audit_seal_pending`: under the head's lock, the
-- pending rows in id order get their `seq`, `prev_hash` and `hash`, as before, and the head
-- moves, in one short transaction for up to `p_limit` rows. Each node's store calls it in the
-- background (every `audit_seal_interval`), and before every read of the trail or its head, so
-- that a reader sees every row committed before its read sealed, as before.
--
-- What the chain proves is unchanged for sealed rows: a sealed row edited, deleted, or inserted
-- out of band (past the trigger, say with `session_replication_role = replica`, or with a
-- forged place) is named by `verify_chain`. What is new is a window: between its commit and its
-- seal (at most `audit_seal_interval`, or until the next read), a row can be changed or deleted
-- in the database directly without a trace; the deferred trigger sealed it at its commit. A row inserted through the trigger is sealed, even when its inserter
-- dies right after its commit (any node's sealer seals it). A pending row is not out of band:
-- `list_audit`'s `unchained` filter returns only the rows that are neither sealed nor pending.
-- The chain's order is the sealing order (by id among the rows pending at once), no longer the
-- commit order; rows committed between two seals wait at most `audit_seal_interval` (or the
-- next read) for their place.

ALTER TABLE audit_events ADD COLUMN pending BOOLEAN NOT NULL DEFAULT false;

DROP TRIGGER audit_events_chain ON audit_events;
DROP FUNCTION capecontrol_audit_seal();

CREATE FUNCTION capecontrol_audit_mark() RETURNS trigger AS $$
BEGIN
  -- A row that brings its own place was not sealed by the store: it stays out of the chain
  -- (and `verify_chain` names it), as the deferred trigger left it before.
  NEW.pending := NEW.seq IS NULL;
  RETURN NEW;
END;
$$ LANGUAGE plpgsql;

-- The same name as before: whoever disabled the chain's trigger disables this one.
CREATE TRIGGER audit_events_chain BEFORE INSERT ON audit_events
  FOR EACH ROW EXECUTE FUNCTION capecontrol_audit_mark();

CREATE INDEX idx_audit_events_pending ON audit_events (id) WHERE pending;

-- Seals up to `p_limit` pending rows (in id order) into the chain and returns how many. With
-- `p_wait`, waits for a sealer of another session to finish; without, returns -1 at once when
-- one holds the head (it seals these rows as well, or the next call does).
CREATE FUNCTION capecontrol_audit_seal_pending(p_limit INT, p_wait BOOLEAN)
RETURNS INT AS $$
DECLARE
  h audit_chain;
  r audit_events;
  v_ids BIGINT[] := '{}';
  v_seqs BIGINT[] := '{}';
  v_prevs TEXT[] := '{}';
  v_hashes TEXT[] := '{}';
BEGIN
  IF NOT EXISTS (SELECT 1 FROM audit_events WHERE pending) THEN
    RETURN 0;
  END IF;
  IF p_wait THEN
    SELECT * INTO h FROM audit_chain WHERE id FOR UPDATE;
  ELSE
    SELECT * INTO h FROM audit_chain WHERE id FOR UPDATE SKIP LOCKED;
    IF NOT FOUND THEN
      RETURN -1;
    END IF;
  END IF;
  -- A fresh snapshot (READ COMMITTED: this statement's): the rows another sealer sealed while
  -- this one waited for the head are no longer pending.
  FOR r IN SELECT * FROM audit_events WHERE pending ORDER BY id LIMIT p_limit LOOP
    r.seq := h.seq + 1;
    r.prev_hash := h.hash;
    r.hash := capecontrol_audit_hash(r);
    v_ids := v_ids || r.id;
    v_seqs := v_seqs || r.seq;
    v_prevs := v_prevs || r.prev_hash;
    v_hashes := v_hashes || r.hash;
    h.seq := r.seq;
    h.hash := r.hash;
  END LOOP;
  IF cardinality(v_ids) = 0 THEN
    RETURN 0;
  END IF;
  UPDATE audit_events a
  SET seq = s.seq, prev_hash = s.prev_hash, hash = s.hash, pending = false
  FROM unnest(v_ids, v_seqs, v_prevs, v_hashes) AS s(id, seq, prev_hash, hash)
  WHERE a.id = s.id;
  UPDATE audit_chain SET seq = h.seq, hash = h.hash WHERE id;
  RETURN cardinality(v_ids);
END;
$$ LANGUAGE plpgsql;
