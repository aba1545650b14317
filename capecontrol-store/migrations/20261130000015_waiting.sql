-- Issue 15 "Long-running agents": a task may wait durably (an answer to `ask_user`, a durable
-- timer) without a worker or a lease. The task status CHECK gains `waiting` (the blueprint's
-- five states are kept); what a waiting task waits for is one row of `task_waits`.
ALTER TABLE tasks DROP CONSTRAINT IF EXISTS tasks_status_check;
ALTER TABLE tasks ADD CONSTRAINT tasks_status_check
  CHECK (status IN ('queued','running','completed','failed','cancelled','waiting'));

-- The wait of a `waiting` task: the journal position its wake-up completes, the deadline
-- (NULL: none) and the wait itself (capecontrol_core::store::Wait, as JSON).
CREATE TABLE task_waits (
  task_id UUID PRIMARY KEY REFERENCES tasks(id) ON DELETE CASCADE,
  step INT NOT NULL,
  until TIMESTAMPTZ,
  wait JSONB NOT NULL
);
-- The timer sweep: waits by deadline.
CREATE INDEX idx_task_waits_until ON task_waits(until) WHERE until IS NOT NULL;
