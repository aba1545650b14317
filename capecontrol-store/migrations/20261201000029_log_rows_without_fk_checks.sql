-- The log rows — a task's events (`task_events`), its steps (`runs`) and the audit trail
-- (`audit_events`) — without a foreign-key check per row (issue 12).
--
-- Every such row is written by the store for a task it has just inserted or updated in the
-- same statement, yet each paid a check of its own at the end of that statement: a query with
-- a `FOR KEY SHARE` lock on the task's row, and for an audit row one on its agent's row too,
-- which many concurrent transactions share (a multixact). `auto_explain` on one enqueue that
-- claims its task: 175 µs of its 380 µs were these checks (2 event rows, 3 audit rows).
--
-- What the constraints guaranteed stays guaranteed:
-- * an audit row naming an agent or a task that does not exist is refused, with the same
--   error (SQLSTATE 23503 naming the old constraint, which the store maps to not-found): the
--   audit trigger, which already runs once per inserting statement, checks all the
--   statement's rows in one query each for agents and tasks;
-- * deleting a task deletes its events and steps (the old `ON DELETE CASCADE`), by a
--   statement trigger on `tasks`.
-- What changes: deleting a task or an agent leaves the audit rows that name it as they are
-- (the old `ON DELETE SET NULL` rewrote them, which broke the hash chain over them). Neither is
-- deleted by the platform.

ALTER TABLE task_events DROP CONSTRAINT task_events_task_id_fkey;
ALTER TABLE runs DROP CONSTRAINT runs_task_id_fkey;
ALTER TABLE audit_events DROP CONSTRAINT audit_events_task_id_fkey;
ALTER TABLE audit_events DROP CONSTRAINT audit_events_agent_id_fkey;

CREATE FUNCTION capecontrol_task_logs_delete() RETURNS trigger AS $$
BEGIN
  DELETE FROM task_events e USING old_rows o WHERE e.task_id = o.id;
  DELETE FROM runs r USING old_rows o WHERE r.task_id = o.id;
  RETURN NULL;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER tasks_logs_cascade AFTER DELETE ON tasks
  REFERENCING OLD TABLE AS old_rows
  FOR EACH STATEMENT EXECUTE FUNCTION capecontrol_task_logs_delete();

CREATE OR REPLACE FUNCTION capecontrol_audit_mark() RETURNS trigger AS $$
DECLARE
  v_agent TEXT;
  v_task UUID;
BEGIN
  -- Each row's reference probed by primary key (a scalar subquery per row: as an anti-join,
  -- the planner, not knowing how few rows a statement inserts, hashed the whole table).
  SELECT n.agent_id INTO v_agent FROM new_rows n
  WHERE n.agent_id IS NOT NULL AND (SELECT a.id FROM agents a WHERE a.id = n.agent_id) IS NULL
  LIMIT 1;
  IF FOUND THEN
    RAISE EXCEPTION USING ERRCODE = 'foreign_key_violation',
      CONSTRAINT = 'audit_events_agent_id_fkey',
      MESSAGE = format('an audit row names agent %L, which does not exist', v_agent);
  END IF;
  SELECT n.task_id INTO v_task FROM new_rows n
  WHERE n.task_id IS NOT NULL AND (SELECT t.id FROM tasks t WHERE t.id = n.task_id) IS NULL
  LIMIT 1;
  IF FOUND THEN
    RAISE EXCEPTION USING ERRCODE = 'foreign_key_violation',
      CONSTRAINT = 'audit_events_task_id_fkey',
      MESSAGE = format('an audit row names task %s, which does not exist', v_task);
  END IF;
  INSERT INTO audit_pending (id) SELECT id FROM new_rows;
  RETURN NULL;
END;
$$ LANGUAGE plpgsql;
