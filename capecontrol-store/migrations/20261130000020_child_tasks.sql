-- Issue 15 "Long-running agents", child tasks: a task may spawn others (`cx.spawn`) and wait
-- for them (`cx.join`). A child names its parent; cancelling a parent cancels its descendants
-- that are not final (the cascade walks `parent_id`, hence the index). A parent's wait on its
-- children is a `task_waits` row whose `wait` is of kind `children`.
ALTER TABLE tasks ADD COLUMN parent_id UUID REFERENCES tasks(id) ON DELETE SET NULL;
CREATE INDEX idx_tasks_parent_id ON tasks(parent_id) WHERE parent_id IS NOT NULL;
-- The join sweep: waits on children only.
CREATE INDEX idx_task_waits_children ON task_waits(task_id)
  WHERE (wait->'waiting_for'->>'kind') = 'children';
