-- tenure schema version 7 (PostgreSQL): indexes that let a claim walk only what it takes
-- instead of every enabled task (a claim cost O(tasks): 20 s for one worker to claim
-- 100,000 tasks in chunks of 500): the tasks with no owner, in key order, and each
-- owner's tasks in key order (replacing the index on owner alone).
CREATE INDEX IF NOT EXISTS tenure_tasks_free ON tenure_tasks (kind, key) WHERE owner IS NULL AND enabled;
CREATE INDEX IF NOT EXISTS tenure_tasks_owner_key ON tenure_tasks (owner, kind, key);
DROP INDEX IF EXISTS tenure_tasks_owner;
