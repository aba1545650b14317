-- The claim plans its statements once per session (issue 12).
--
-- A profile of one backend running `capecontrol_claim` in a loop (claims of 7 tasks, `perf
-- record`) spent 13 % of the time planning: PL/pgSQL caches each statement's plan, but a
-- statement with parameters is re-planned for every call while PostgreSQL judges a custom plan
-- cheaper than the generic one, which is the case for most of the claim's statements (arrays
-- of candidates, the agent's name). Their generic plans are the custom ones' shapes (checked
-- with `auto_explain`: the queue by `idx_tasks_claim_agent` / `idx_tasks_due_agent`, the
-- candidates' lock by `tasks_pkey`, the running counts by `idx_tasks_running_agent`), so the
-- function now always uses them. Measured in psql, 500 claims of 7 from 3,000 queued tasks:
-- 1.18-1.33 s -> 1.00-1.02 s; 25 claims behind 100,000 delayed tasks: 0.12-0.14 s -> 0.09 s.
--
-- A later `CREATE OR REPLACE FUNCTION capecontrol_claim` drops this setting unless it says
-- `SET plan_cache_mode = force_generic_plan` itself.

ALTER FUNCTION capecontrol_claim(TEXT, INT, BIGINT, TEXT[]) SET plan_cache_mode = force_generic_plan;
