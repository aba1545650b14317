-- What the platform adds to blueprint §4: installations, version changelogs, the queue columns
-- of `tasks`, numbered task events, and the functions of the queue.
-- No NOTIFY trigger: a NOTIFY inside a write transaction serializes every such commit through
-- its WAL flush (see capecontrol-store/src/notify.rs); the store notifies after commit.
-- The task status CHECK stays the blueprint's.

-- Installations: an agent installed for a user, with the scopes granted and the settings.
CREATE TABLE installations (
  id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
  agent_id TEXT NOT NULL REFERENCES agents(id) ON DELETE CASCADE,
  user_id TEXT NOT NULL,
  version TEXT NOT NULL,
  granted_scopes TEXT[] NOT NULL DEFAULT '{}',
  settings JSONB NOT NULL DEFAULT '{}',
  created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
  updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
  UNIQUE (agent_id, user_id)
);
CREATE INDEX idx_installations_user_id ON installations(user_id);
CREATE TRIGGER update_installations_updated_at BEFORE UPDATE ON installations
FOR EACH ROW EXECUTE FUNCTION update_updated_at_column();

ALTER TABLE agent_versions ADD COLUMN changelog TEXT;

-- The queue columns.
ALTER TABLE tasks
  ADD COLUMN version TEXT NOT NULL DEFAULT '',
  ADD COLUMN output JSONB,
  ADD COLUMN principal JSONB NOT NULL DEFAULT '{}',
  ADD COLUMN priority INT NOT NULL DEFAULT 0,
  ADD COLUMN run_at TIMESTAMPTZ NOT NULL DEFAULT now(),
  ADD COLUMN attempts INT NOT NULL DEFAULT 0,
  ADD COLUMN max_attempts BIGINT NOT NULL DEFAULT 1,
  ADD COLUMN concurrency_limit BIGINT NOT NULL DEFAULT 1,
  ADD COLUMN timeout_ms BIGINT NOT NULL DEFAULT 30000,
  ADD COLUMN lease_owner TEXT,
  ADD COLUMN lease_token UUID,
  ADD COLUMN lease_expires_at TIMESTAMPTZ,
  ADD COLUMN cancel_requested BOOLEAN NOT NULL DEFAULT false,
  ADD COLUMN idempotency_key TEXT,
  ADD COLUMN error JSONB,
  -- The task's last event number (task_events.seq): the store numbers its own events after it.
  ADD COLUMN last_seq BIGINT NOT NULL DEFAULT 0;

-- Idempotency keys are unique per user (NULL keys never conflict).
CREATE UNIQUE INDEX idx_tasks_user_idempotency_key ON tasks(user_id, idempotency_key);
-- Claims: due queued tasks by priority then age.
CREATE INDEX idx_tasks_claim ON tasks(priority DESC, created_at, id) WHERE status = 'queued';
-- Per-agent concurrency: running tasks of an agent; queued tasks of an agent (wake-ups).
CREATE INDEX idx_tasks_running_agent ON tasks(agent_id) WHERE status = 'running';
CREATE INDEX idx_tasks_queued_agent ON tasks(agent_id) WHERE status = 'queued';
-- The reaper: running tasks by lease expiry.
CREATE INDEX idx_tasks_lease_expires_at ON tasks(lease_expires_at) WHERE status = 'running';

-- Task events, numbered per task from 1 without gaps.
CREATE TABLE task_events (
  task_id UUID NOT NULL REFERENCES tasks(id) ON DELETE CASCADE,
  seq BIGINT NOT NULL,
  at TIMESTAMPTZ NOT NULL DEFAULT now(),
  kind JSONB NOT NULL,
  PRIMARY KEY (task_id, seq)
);

CREATE INDEX idx_audit_events_task_id ON audit_events(task_id);

-- The journaled steps of a task as a JSON array of step records, by step number.
CREATE FUNCTION capecontrol_steps(p_task UUID) RETURNS JSONB AS $$
  SELECT COALESCE(jsonb_agg(jsonb_build_object(
           'step', r.step,
           'name', COALESCE(r.state->>'name', ''),
           'status', r.status,
           'output', r.state->'output',
           'error', r.error_details,
           'started_at', r.started_at,
           'finished_at', r.finished_at) ORDER BY r.step), '[]'::jsonb)
  FROM runs r WHERE r.task_id = p_task;
$$ LANGUAGE sql STABLE;

-- Claims up to p_limit due tasks, by priority then age, for worker p_worker under leases of
-- p_lease_ms on this server's clock, never exceeding a task's concurrency_limit counted over all
-- running tasks of its agent on every node. One call, one transaction:
--
-- 1. Candidates are locked with FOR UPDATE SKIP LOCKED (claimers never wait for one another's
--    rows and never get the same task). Agents already at their limit (one unlocked count of
--    running tasks per agent) are filtered out here so that they do not crowd out the others;
--    their queued tasks are still walked past in the claim index.
-- 2. For each agent among the candidates, in name order (so that claimers cannot deadlock), a
--    transaction-scoped advisory lock is taken and the agent's running tasks are counted. Under
--    READ COMMITTED each statement of this function takes a new snapshot, so the count sees every
--    claim committed by whoever held the lock before: the authoritative check.
-- 3. Candidates are admitted in priority order while their agent is under the limit; the others
--    are left queued (their row locks end with the transaction).
-- 4. Admitted tasks become running (attempts + 1, a fresh fencing token), each with its `started`
--    event (seq = last_seq, at = started_at) and `task.started` audit row.
CREATE FUNCTION capecontrol_claim(p_worker TEXT, p_limit INT, p_lease_ms BIGINT, p_agents TEXT[])
RETURNS TABLE (task tasks, steps JSONB) AS $$
DECLARE
  c_ids UUID[];
  c_agents TEXT[];
  c_limits BIGINT[];
  a_names TEXT[] := '{}';
  a_running BIGINT[] := '{}';
  v_ids UUID[] := '{}';
  v_agent TEXT;
  v_busy JSONB;
  j INT;
BEGIN
  -- The count under the advisory lock must see claims committed meanwhile: a fresh snapshot
  -- per statement, which only READ COMMITTED gives.
  IF current_setting('transaction_isolation') <> 'read committed' THEN
    RAISE EXCEPTION 'capecontrol_claim must run under READ COMMITTED, not %',
      current_setting('transaction_isolation');
  END IF;
  IF p_limit <= 0 THEN
    RETURN;
  END IF;

  -- Running tasks per agent, once (an unlocked read: only a filter, step 2 decides).
  SELECT COALESCE(jsonb_object_agg(r.agent_id, r.n), '{}'::jsonb) INTO v_busy
  FROM (SELECT agent_id, count(*) AS n FROM tasks
        WHERE status = 'running' AND agent_id IS NOT NULL GROUP BY agent_id) r;

  SELECT array_agg(c.id ORDER BY c.priority DESC, c.created_at, c.id),
         array_agg(c.agent_id ORDER BY c.priority DESC, c.created_at, c.id),
         array_agg(c.concurrency_limit ORDER BY c.priority DESC, c.created_at, c.id)
    INTO c_ids, c_agents, c_limits
  FROM (SELECT t.id, t.agent_id, t.concurrency_limit, t.priority, t.created_at
        FROM tasks t
        WHERE t.status = 'queued'
          AND t.run_at <= now()
          AND (p_agents IS NULL OR t.agent_id = ANY (p_agents))
          AND COALESCE((v_busy ->> t.agent_id)::bigint, 0) < t.concurrency_limit
        ORDER BY t.priority DESC, t.created_at, t.id
        LIMIT p_limit * 2 + 8
        FOR UPDATE OF t SKIP LOCKED) c;

  IF c_ids IS NULL THEN
    RETURN;
  END IF;

  FOR v_agent IN SELECT DISTINCT a FROM unnest(c_agents) AS a ORDER BY a LOOP
    -- 0x43415045 = 'CAPE': the key space of these locks.
    PERFORM pg_advisory_xact_lock(1128353861, hashtext(COALESCE(v_agent, '')));
    a_names := a_names || v_agent;
    a_running := a_running || (SELECT count(*) FROM tasks r
                               WHERE r.agent_id IS NOT DISTINCT FROM v_agent
                                 AND r.status = 'running');
  END LOOP;

  FOR i IN 1 .. cardinality(c_ids) LOOP
    EXIT WHEN cardinality(v_ids) >= p_limit;
    j := array_position(a_names, c_agents[i]);
    IF a_running[j] < c_limits[i] THEN
      v_ids := v_ids || c_ids[i];
      a_running[j] := a_running[j] + 1;
    END IF;
  END LOOP;

  IF cardinality(v_ids) = 0 THEN
    RETURN;
  END IF;

  RETURN QUERY
  WITH upd AS (
    UPDATE tasks t
    SET status = 'running',
        attempts = t.attempts + 1,
        lease_owner = p_worker,
        lease_token = gen_random_uuid(),
        lease_expires_at = now() + p_lease_ms * interval '1 millisecond',
        started_at = now(),
        last_seq = t.last_seq + 1
    WHERE t.id = ANY (v_ids)
    RETURNING t.*
  ), ev AS (
    INSERT INTO task_events (task_id, seq, at, kind)
    SELECT u.id, u.last_seq, now(),
           jsonb_build_object('type', 'started', 'attempt', u.attempts, 'worker', p_worker)
    FROM upd u
  ), au AS (
    INSERT INTO audit_events (task_id, agent_id, user_id, event_type, payload)
    SELECT u.id, u.agent_id, u.user_id, 'task.started',
           jsonb_build_object('attempt', u.attempts, 'worker', p_worker)
    FROM upd u
  )
  SELECT (u.*)::tasks, capecontrol_steps(u.id)
  FROM upd u
  ORDER BY u.priority DESC, u.created_at, u.id;
END;
$$ LANGUAGE plpgsql;
