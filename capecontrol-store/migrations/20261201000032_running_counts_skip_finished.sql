-- The claim's and the start-here enqueue's reads of the queue stay off the finished tasks
-- (issue 12).
--
-- A session plans these statements once (generic plans), with the statistics of that moment.
-- Planned while the table held mostly queued tasks (a burst of submissions, a fresh database
-- before a drain), some chose paths that walk the finished tasks later on:
-- * the claim's skip scan over the agents with queued tasks used `idx_tasks_agent_id` (every
--   task of the agent, finished or not, filtered by status): 2.4-2.6 ms a call instead of
--   0.04-0.05 ms, in two of three drains of 20,000 tasks at 16 workers, which then ran at
--   2,900 instead of 3,900-4,250 tasks/s. It is now ordered as `idx_tasks_claim_agent` is
--   (agent, then claim order), which only that index of the queue can serve;
-- * `capecontrol_may_start`'s probe for an earlier due task planned as a sequential scan (the
--   first row would do while all rows were queued); it is now ordered by due time, which only
--   `idx_tasks_due_agent` serves, over the due tasks alone.
--
-- The counts of running tasks — twice per claim (the unlocked filter over all agents, then the
-- authoritative count under each agent's lock) and once per start-here enqueue — were bitmap
-- scans of `idx_tasks_running_agent` in most runs. A bitmap scan never marks the index entry
-- of a dead row as dead, and every task that ran leaves one (its row moved on from
-- `running`), so until the next vacuum each count read the heap for every task that had run
-- since: `auto_explain` while draining 5,000 one-step tasks at 16 workers showed 1,131 entries
-- and 144 heap blocks read to count 14 running tasks (0.13-0.25 and 0.07-0.14 ms a call with
-- 20,000 tasks, `pg_stat_statements`). They now run in two small functions planned without
-- bitmap scans (only they: the claim's other statements keep their plans): an index-only scan
-- marks an entry whose row is dead to every transaction, and later scans skip it without
-- reading the heap. The index keeps one entry per row (no deduplication: a posting list of
-- many rows is only marked when all of them are dead, and the live and dead rows of one agent
-- share its key). The functions are VOLATILE: each count takes a snapshot of its own, so the
-- one under the agent's lock sees the claims committed before it.

ALTER INDEX idx_tasks_running_agent SET (deduplicate_items = off);

-- Running tasks of one agent (of no agent, for NULL). `IS NOT DISTINCT FROM` is no index
-- condition, so only the running tasks' own index can answer it; written as `agent_id = $1`,
-- its generic plan took 0.54 ms a call in a drain of 20,000 tasks.
CREATE FUNCTION capecontrol_running(p_agent TEXT) RETURNS BIGINT AS $$
BEGIN
  RETURN (SELECT count(*) FROM tasks
          WHERE status = 'running' AND agent_id IS NOT DISTINCT FROM p_agent);
END;
$$ LANGUAGE plpgsql SET enable_bitmapscan = off;

-- Running tasks per agent, as a JSON object.
CREATE FUNCTION capecontrol_running_by_agent() RETURNS JSONB AS $$
BEGIN
  RETURN (SELECT COALESCE(jsonb_object_agg(r.agent_id, r.n), '{}'::jsonb)
          FROM (SELECT agent_id, count(*) AS n FROM tasks
                WHERE status = 'running' AND agent_id IS NOT NULL GROUP BY agent_id) r);
END;
$$ LANGUAGE plpgsql SET enable_bitmapscan = off;

-- As in 20261201000028, the probe ordered by due time and the count through
-- `capecontrol_running`.
CREATE OR REPLACE FUNCTION capecontrol_may_start(p_agent TEXT, p_limit BIGINT, p_priority INT,
                                      p_run_at TIMESTAMPTZ, p_agents TEXT[])
RETURNS BOOLEAN AS $$
BEGIN
  IF current_setting('transaction_isolation') <> 'read committed'
     OR p_agent IS NULL OR p_limit IS NULL
     OR COALESCE(p_run_at > now(), false)
     OR NOT COALESCE(p_agents IS NULL OR p_agent = ANY (p_agents), false) THEN
    RETURN false;
  END IF;
  -- Ordered by due time, which only `idx_tasks_due_agent` serves (over the due tasks alone).
  PERFORM 1 FROM tasks t
  WHERE t.status = 'queued' AND t.agent_id = p_agent AND t.run_at <= now()
    AND t.priority >= p_priority
  ORDER BY t.run_at
  LIMIT 1;
  IF FOUND THEN
    RETURN false;
  END IF;
  -- 0x43415045 = 'CAPE': the key space of the claim's locks; not waited for.
  IF NOT pg_try_advisory_xact_lock(1128353861, hashtext(p_agent)) THEN
    RETURN false;
  END IF;
  RETURN capecontrol_running(p_agent) < p_limit;
END;
$$ LANGUAGE plpgsql;

-- As in 20261201000031, the skip scan in claim order and the counts through the functions
-- above (and its generic plans).
CREATE OR REPLACE FUNCTION capecontrol_claim(p_worker TEXT, p_limit INT, p_lease_ms BIGINT,
                                             p_agents TEXT[])
RETURNS TABLE (task tasks, steps JSONB) AS $$
DECLARE
  k INT;
  v_agents TEXT[];
  v_agent TEXT;
  v_head_limit BIGINT;
  v_busy JSONB;
  v_window BIGINT;
  v_room BIGINT;
  v_found UUID[];
  v_candidates UUID[] := '{}';
  c_ids UUID[];
  c_agents TEXT[];
  c_limits BIGINT[];
  a_names TEXT[] := '{}';
  a_running BIGINT[] := '{}';
  v_ids UUID[] := '{}';
  j INT;
BEGIN
  IF current_setting('transaction_isolation') <> 'read committed' THEN
    RAISE EXCEPTION 'capecontrol_claim must run under READ COMMITTED, not %',
      current_setting('transaction_isolation');
  END IF;
  IF p_limit <= 0 THEN
    RETURN;
  END IF;
  k := p_limit * 2 + 8;

  -- Running tasks per agent, once (an unlocked read: only a filter, the count under the
  -- advisory lock decides).
  v_busy := capecontrol_running_by_agent();

  IF p_agents IS NULL THEN
    -- A skip scan: one index probe per agent with queued tasks.
    -- Ordered as `idx_tasks_claim_agent` is, which only that index of the queue serves.
    WITH RECURSIVE queued(agent_id) AS (
      (SELECT t.agent_id FROM tasks t
       WHERE t.status = 'queued' AND t.agent_id IS NOT NULL
       ORDER BY t.agent_id, t.priority DESC, t.created_at, t.id LIMIT 1)
      UNION ALL
      SELECT (SELECT t.agent_id FROM tasks t
              WHERE t.status = 'queued' AND t.agent_id > q.agent_id
              ORDER BY t.agent_id, t.priority DESC, t.created_at, t.id LIMIT 1)
      FROM queued q WHERE q.agent_id IS NOT NULL
    )
    SELECT array_agg(q.agent_id) INTO v_agents FROM queued q WHERE q.agent_id IS NOT NULL;
  ELSE
    SELECT array_agg(DISTINCT a) INTO v_agents FROM unnest(p_agents) AS a WHERE a IS NOT NULL;
  END IF;

  FOREACH v_agent IN ARRAY COALESCE(v_agents, '{}') LOOP
    v_head_limit := NULL;
    SELECT t.concurrency_limit INTO v_head_limit FROM tasks t
    WHERE t.status = 'queued' AND t.agent_id = v_agent
    ORDER BY t.priority DESC, t.created_at, t.id LIMIT 1;
    CONTINUE WHEN v_head_limit IS NULL
      OR COALESCE((v_busy ->> v_agent)::bigint, 0) >= v_head_limit;
    -- No more of its tasks than its limit leaves room for.
    v_room := LEAST(k, v_head_limit - COALESCE((v_busy ->> v_agent)::bigint, 0));

    -- The head of the agent's queue, keeping the due tasks.
    SELECT count(*),
           (array_agg(h.id ORDER BY h.priority DESC, h.created_at, h.id)
              FILTER (WHERE h.run_at <= now()))[1:k]
      INTO v_window, v_found
    FROM (SELECT t.id, t.priority, t.created_at, t.run_at
          FROM tasks t
          WHERE t.status = 'queued' AND t.agent_id = v_agent
          ORDER BY t.priority DESC, t.created_at, t.id
          LIMIT k + 64) h;

    IF COALESCE(cardinality(v_found), 0) < v_room AND v_window = k + 64 THEN
      -- Delayed tasks fill the head: the agent's due tasks by run_at instead (the fence keeps
      -- the planner on the run_at range rather than walking the claim order).
      SELECT array_agg(d.id ORDER BY d.priority DESC, d.created_at, d.id) INTO v_found
      FROM (SELECT f.id, f.priority, f.created_at
            FROM (SELECT t.id, t.priority, t.created_at FROM tasks t
                  WHERE t.status = 'queued' AND t.agent_id = v_agent AND t.run_at <= now()
                  OFFSET 0) f
            ORDER BY f.priority DESC, f.created_at, f.id
            LIMIT k) d;
    END IF;
    v_candidates := v_candidates || COALESCE(v_found[1:v_room], '{}');
  END LOOP;

  IF cardinality(v_candidates) = 0 THEN
    RETURN;
  END IF;

  -- Merge in claim order and lock, skipping rows another claimer holds; status and due time
  -- are re-checked on the locked rows. The candidates are found by the primary key: the
  -- re-checks are written so that no index over the queue can answer them (a plain
  -- `status = 'queued' AND run_at <= now()` let the planner scan every due task of the queue
  -- through `idx_tasks_due_agent` and filter the candidates out of it).
  SELECT array_agg(c.id ORDER BY c.priority DESC, c.created_at, c.id),
         array_agg(c.agent_id ORDER BY c.priority DESC, c.created_at, c.id),
         array_agg(c.concurrency_limit ORDER BY c.priority DESC, c.created_at, c.id)
    INTO c_ids, c_agents, c_limits
  FROM (SELECT t.id, t.agent_id, t.concurrency_limit, t.priority, t.created_at
        FROM tasks t
        WHERE t.id = ANY (v_candidates)
          AND CASE WHEN t.status = 'queued' THEN t.run_at <= now() ELSE false END
        ORDER BY t.priority DESC, t.created_at, t.id
        LIMIT LEAST(k, p_limit + 2)
        FOR UPDATE OF t SKIP LOCKED) c;

  IF c_ids IS NULL THEN
    RETURN;
  END IF;

  FOR v_agent IN SELECT DISTINCT a FROM unnest(c_agents) AS a ORDER BY a LOOP
    -- 0x43415045 = 'CAPE': the key space of these locks.
    PERFORM pg_advisory_xact_lock(1128353861, hashtext(COALESCE(v_agent, '')));
    a_names := a_names || v_agent;
    a_running := a_running || capecontrol_running(v_agent);
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
  -- Each task's steps as `capecontrol_steps` returns them, read in this statement (planned
  -- with it, once per session) rather than by a function call per claimed task.
  SELECT (u.*)::tasks,
         COALESCE((SELECT jsonb_agg(jsonb_build_object(
                            'step', r.step,
                            'name', COALESCE(r.state->>'name', ''),
                            'status', r.status,
                            'output', r.state->'output',
                            'error', r.error_details,
                            'started_at', r.started_at,
                            'finished_at', r.finished_at) ORDER BY r.step)
                   FROM runs r WHERE r.task_id = u.id), '[]'::jsonb)
  FROM upd u
  ORDER BY u.priority DESC, u.created_at, u.id;
END;
$$ LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan;
