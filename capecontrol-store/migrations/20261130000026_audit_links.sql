-- The audit chain's links in a narrow table of their own, sealed by the store (issue 12).
--
-- Until now a seal wrote each row's place (`seq`, `prev_hash`, `hash`) into the row itself: an
-- update of every audit row, which could not be HOT (`seq` is indexed, and the pending flag is
-- the predicate of a partial index), so it wrote a second copy of the whole row, payload
-- included, and a new entry in each of its six indexes. `pg_stat_statements` while draining
-- 5,000 one-step tasks at 16 workers: the sealer took 1.3 s of PostgreSQL's ~4.4 s, 0.7 s of
-- it in that update, 0.2 s hashing in SQL and the rest in its PL/pgSQL loop.
--
-- Now:
-- * `audit_links` holds one narrow row per sealed audit row: its place, the previous row's hash
--   and its own. An `audit_events` row is written once and never updated by the chain.
-- * `audit_pending` holds the ids of the rows inserted through the chain's trigger and not yet
--   sealed. The trigger (same name as before: whoever disables it still inserts out of band) is
--   a statement trigger: one insert into `audit_pending` per inserting statement, however many
--   rows it wrote (the queue's statements write a batch's rows at once).
-- * The store seals (`PostgresStore::seal_audit`, in Rust, as before every read and in the
--   background): under the head's lock, it reads the pending rows in id order, hashes them
--   with the same canonical form `verify_chain` checks, then deletes them from `audit_pending`,
--   inserts their links and moves the head, in one statement and one transaction.
--
-- What the chain proves and the window between a commit and its seal are as in
-- 20261130000021. A link written or edited by hand is judged like any row: `verify_chain`
-- recomputes every hash from the row and its link. The rows sealed before this migration keep
-- their places: they are copied into `audit_links`, then the columns go.

CREATE TABLE audit_links (
  id BIGINT PRIMARY KEY,
  seq BIGINT NOT NULL UNIQUE,
  prev_hash TEXT NOT NULL,
  hash TEXT NOT NULL
);

CREATE TABLE audit_pending (
  id BIGINT PRIMARY KEY
);

INSERT INTO audit_links (id, seq, prev_hash, hash)
SELECT id, seq, COALESCE(prev_hash, ''), COALESCE(hash, '') FROM audit_events WHERE seq IS NOT NULL;
INSERT INTO audit_pending (id) SELECT id FROM audit_events WHERE pending;

DROP TRIGGER audit_events_chain ON audit_events;
DROP FUNCTION capecontrol_audit_mark();
DROP FUNCTION capecontrol_audit_seal_pending(INT, BOOLEAN);
DROP FUNCTION capecontrol_audit_hash(audit_events);
DROP INDEX idx_audit_events_pending;
DROP INDEX idx_audit_events_seq;
ALTER TABLE audit_events DROP COLUMN seq, DROP COLUMN prev_hash, DROP COLUMN hash,
  DROP COLUMN pending;

CREATE FUNCTION capecontrol_audit_mark() RETURNS trigger AS $$
BEGIN
  INSERT INTO audit_pending (id) SELECT id FROM new_rows;
  RETURN NULL;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER audit_events_chain AFTER INSERT ON audit_events
  REFERENCING NEW TABLE AS new_rows
  FOR EACH STATEMENT EXECUTE FUNCTION capecontrol_audit_mark();
