-- A task submitted to a node with a free worker slot starts in its enqueue's own write
-- (issue 12): `QueueStore::enqueue_claimed`.
--
-- The enqueue statement asks this function first, in a materialized CTE that its INSERT reads
-- (so it runs before the row is written), whether a claim by that node would take the new task
-- now. It answers as `capecontrol_claim` would decide: the task is due, its agent is among the
-- node's agents, no due task of the agent with at least its priority is queued (a claim takes
-- that one first), and the agent runs fewer tasks than the task's limit, counted under the
-- agent's advisory lock (the one `capecontrol_claim` takes, held to the enqueue's commit). The
-- lock is only taken when it is free at once: while a claim or another such enqueue of the
-- agent holds it, the answer is no (concurrent enqueues of one agent would otherwise wait for
-- each other's commits). Its statements see what committed before each of them (READ
-- COMMITTED); under another isolation level the answer is no. A no leaves the task queued for
-- a claim, as a plain enqueue does.

CREATE FUNCTION capecontrol_may_start(p_agent TEXT, p_limit BIGINT, p_priority INT,
                                      p_run_at TIMESTAMPTZ, p_agents TEXT[])
RETURNS BOOLEAN AS $$
BEGIN
  IF current_setting('transaction_isolation') <> 'read committed'
     OR p_agent IS NULL OR p_limit IS NULL
     OR COALESCE(p_run_at > now(), false)
     OR NOT COALESCE(p_agents IS NULL OR p_agent = ANY (p_agents), false) THEN
    RETURN false;
  END IF;
  PERFORM 1 FROM tasks t
  WHERE t.status = 'queued' AND t.agent_id = p_agent AND t.run_at <= now()
    AND t.priority >= p_priority
  LIMIT 1;
  IF FOUND THEN
    RETURN false;
  END IF;
  -- 0x43415045 = 'CAPE': the key space of the claim's locks; not waited for.
  IF NOT pg_try_advisory_xact_lock(1128353861, hashtext(p_agent)) THEN
    RETURN false;
  END IF;
  RETURN (SELECT count(*) FROM tasks r WHERE r.agent_id = p_agent AND r.status = 'running')
         < p_limit;
END;
$$ LANGUAGE plpgsql;
