-- The audit sealer finds its rows by index, not by scanning the trail (issue 12).
--
-- 1. Its update of the sealed rows joins the batch (an `unnest` of arrays, which the planner
--    cannot size) to `audit_events` by id alone, so the planner may read the whole trail for
--    it: `auto_explain` showed a hash join over a sequential scan of `audit_events` in every
--    seal while draining 5,000 tasks. At 20,000 rows that costs about what the index would
--    (the update's 16-20 ms a call go to the new index entries of its 200-500 rows, six per
--    row: the update cannot be HOT, `seq` is indexed), but it grows with the trail. The update
--    now also names the ids (`a.id = ANY (v_ids)`), which the planner answers from the primary
--    key once the table is large.
-- 2. Its first check, `NOT EXISTS (pending rows)`, took 8-12 ms a call in the same run (a
--    quarter of the sealer's time; `pg_stat_statements`), then the scan of the rows to seal
--    walked the pending index again from its start, through the entries of every row sealed
--    since the last vacuum (the seal's update takes a row out of the index's predicate; its
--    entry stays until vacuum). Now the check reads the first pending id by that index
--    (0.3-0.5 ms) and the scan starts there. Same result: a row committed before the call is
--    visible to the check, so its id is at or past the first pending id; a row committed later
--    is left to the next call, as before.

CREATE OR REPLACE FUNCTION capecontrol_audit_seal_pending(p_limit INT, p_wait BOOLEAN)
RETURNS INT AS $$
DECLARE
  h audit_chain;
  r audit_events;
  v_first BIGINT;
  v_ids BIGINT[] := '{}';
  v_seqs BIGINT[] := '{}';
  v_prevs TEXT[] := '{}';
  v_hashes TEXT[] := '{}';
BEGIN
  SELECT id INTO v_first FROM audit_events WHERE pending ORDER BY id LIMIT 1;
  IF v_first IS NULL THEN
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
  FOR r IN SELECT * FROM audit_events WHERE pending AND id >= v_first ORDER BY id LIMIT p_limit
  LOOP
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
  WHERE a.id = s.id AND a.id = ANY (v_ids);
  UPDATE audit_chain SET seq = h.seq, hash = h.hash WHERE id;
  RETURN cardinality(v_ids);
END;
$$ LANGUAGE plpgsql;
