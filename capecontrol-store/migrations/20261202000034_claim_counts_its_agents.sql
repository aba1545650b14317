-- A claim's counts of running tasks read the running tasks of the agents it counts, not of
-- every agent (issue 12).
--
-- `capecontrol_running(agent)` filtered the whole running-tasks index (`agent_id IS NOT
-- DISTINCT FROM p_agent` is no index condition): with 20,000 tasks of another agent running it
-- took 2.3 ms a call (`pgbench`, a generic plan) for an agent running 8, and each claim counts
-- at least twice. And each claim first counted the running tasks of every agent
-- (`capecontrol_running_by_agent()`), those of agents with nothing queued included. So a
-- claim's cost grew with the tasks running anywhere in the deployment (long-running agents, or
-- agents at their limit).
--
-- Now the count of one agent is an index condition on `idx_tasks_running_agent` (`agent_id =
-- p_agent`; `IS NULL` for none): 0.18 ms in the same setting, the generic plan an index-only
-- scan of that index even with 20,000 finished tasks of the agent in `idx_tasks_agent_id`. And
-- a claim counts, after its skip scan, only the agents that have queued tasks (or those it is
-- asked for).

CREATE OR REPLACE FUNCTION capecontrol_running(p_agent TEXT) RETURNS BIGINT AS $$
BEGIN
  IF p_agent IS NULL THEN
    RETURN (SELECT count(*) FROM tasks WHERE status = 'running' AND agent_id IS NULL);
  END IF;
  RETURN (SELECT count(*) FROM tasks WHERE status = 'running' AND agent_id = p_agent);
END;
$$ LANGUAGE plpgsql SET enable_bitmapscan = off;

-- Running tasks of the agents `p_agents` (none when NULL or empty), as a JSON object: one
-- `capecontrol_running` per agent.
CREATE FUNCTION capecontrol_running_by_agent(p_agents TEXT[]) RETURNS JSONB AS $$
BEGIN
  RETURN (SELECT COALESCE(jsonb_object_agg(a.agent_id, capecontrol_running(a.agent_id)),
                          '{}'::jsonb)
          FROM unnest(p_agents) AS a(agent_id) WHERE a.agent_id IS NOT NULL);
END;
$$ LANGUAGE plpgsql;

-- As in 20261201000032, with the running counts above.
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

  -- Running tasks of those agents, once (an unlocked read: only a filter, the count under the
  -- advisory lock decides). Only theirs: the running tasks of agents with nothing queued are
  -- not read.
  v_busy := capecontrol_running_by_agent(v_agents);

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

DROP FUNCTION capecontrol_running_by_agent();
