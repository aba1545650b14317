-- The idempotency index holds only the tasks that have a key (issue 12).
--
-- `idx_tasks_user_idempotency_key` was a unique index over every task, keyed or not: a task
-- without an idempotency key (most of them) put a (user, NULL) entry in it at its enqueue, and
-- again at its claim and at its finish, both non-HOT updates of `tasks` that insert a new
-- entry into every index whose predicate the new row version meets. NULL keys never conflict
-- (they are distinct in a unique index), so those entries checked nothing. Partial, the index
-- answers the same lookups (`user_id = $1 AND idempotency_key = $2` implies the predicate) and
-- the enqueue's `ON CONFLICT (user_id, idempotency_key) WHERE idempotency_key IS NOT NULL`.
--
-- The build takes the table's write lock for as long as it runs (a plain CREATE INDEX, inside
-- the migration's transaction); on a large `tasks` table, build the index beforehand with
-- `CREATE UNIQUE INDEX CONCURRENTLY idx_tasks_user_idempotency_key_set ON tasks (user_id,
-- idempotency_key) WHERE idempotency_key IS NOT NULL` and this migration only swaps it in.

CREATE UNIQUE INDEX IF NOT EXISTS idx_tasks_user_idempotency_key_set
  ON tasks (user_id, idempotency_key) WHERE idempotency_key IS NOT NULL;
DROP INDEX idx_tasks_user_idempotency_key;
ALTER INDEX idx_tasks_user_idempotency_key_set RENAME TO idx_tasks_user_idempotency_key;
