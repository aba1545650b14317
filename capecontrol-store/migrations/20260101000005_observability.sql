-- Observability (issue 16): the ratings users give their completed tasks (the source of
-- `user_satisfaction_score`) and the W3C trace context a task was submitted under.

-- One rating per task, by the task's user; agent and version copied from the task so the
-- per-version aggregate reads one index.
CREATE TABLE task_ratings (
  task_id UUID PRIMARY KEY REFERENCES tasks(id) ON DELETE CASCADE,
  user_id TEXT NOT NULL,
  agent_id TEXT NOT NULL,
  version TEXT NOT NULL,
  score SMALLINT NOT NULL CHECK (score BETWEEN 1 AND 5),
  created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
  updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX idx_task_ratings_version ON task_ratings(agent_id, version);

-- The `traceparent` header (W3C Trace Context) of the submitting request, when there was one.
ALTER TABLE tasks ADD COLUMN traceparent TEXT;
