-- `capecontrol_steps` keeps its plan for the session (issue 12).
--
-- The claim returns each claimed task's steps through this function. As a SQL function it was
-- planned again by every statement that called it: `pg_stat_statements` with
-- `track_planning`, draining 5,000 one-step tasks at 16 workers (`vs_apalis`): 690 plans of
-- its query for 690 claims, 0.21 ms each, about 2.4 % of PostgreSQL's CPU per task. PL/pgSQL
-- caches the plan of its statements for the session (the query has one parameter, the task's
-- id, and its plan is the same index scan of `runs` whatever the id), so it is now planned
-- once per connection. Same signature, same result.

CREATE OR REPLACE FUNCTION capecontrol_steps(p_task UUID) RETURNS JSONB AS $$
BEGIN
  RETURN (
    SELECT COALESCE(jsonb_agg(jsonb_build_object(
             'step', r.step,
             'name', COALESCE(r.state->>'name', ''),
             'status', r.status,
             'output', r.state->'output',
             'error', r.error_details,
             'started_at', r.started_at,
             'finished_at', r.finished_at) ORDER BY r.step), '[]'::jsonb)
    FROM runs r WHERE r.task_id = p_task);
END;
$$ LANGUAGE plpgsql STABLE;
