-- Named queries of the SQLite store. {now} stands for the database clock at statement
-- time, in epoch seconds; it is replaced by a constant expression when this file loads.
-- Every value comes in as a bound parameter.

-- name: now
SELECT {now};

-- name: meta_exists
SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'tenure_meta';

-- name: create_meta
CREATE TABLE IF NOT EXISTS tenure_meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);

-- name: schema_version
SELECT value FROM tenure_meta WHERE name = 'schema_version';

-- name: set_schema_version
INSERT INTO tenure_meta (name, value) VALUES ('schema_version', :version)
ON CONFLICT (name) DO UPDATE SET value = excluded.value;

-- name: publish_kind
INSERT INTO tenure_kinds (kind, every, cron, timeout, updated_at)
VALUES (:kind, :every, :cron, :timeout, {now})
ON CONFLICT (kind) DO UPDATE SET
    every = excluded.every, cron = excluded.cron,
    timeout = excluded.timeout, updated_at = excluded.updated_at;

-- name: list_kinds
SELECT kind, every, cron, timeout FROM tenure_kinds ORDER BY kind;

-- name: insert_task
INSERT INTO tenure_tasks (kind, key, every, cron, params, enabled, created_at, updated_at)
VALUES (:kind, :key, :every, :cron, :params, :enabled, {now}, {now});

-- name: get_task
SELECT {task_columns} FROM tenure_tasks WHERE kind = :kind AND key = :key;

-- name: list_tasks
SELECT {task_columns} FROM tenure_tasks
WHERE (:kind IS NULL OR kind = :kind) AND (:owner IS NULL OR owner = :owner)
ORDER BY kind, key;

-- name: owned_tasks
SELECT {task_columns} FROM tenure_tasks WHERE owner = :worker ORDER BY kind, key;

-- name: set_enabled
UPDATE tenure_tasks SET enabled = :enabled, version = version + 1, updated_at = {now}
WHERE kind = :kind AND key = :key;

-- name: disable_cancel
-- Disable and free in one statement (freed_* before owner: MySQL assigns left to right,
-- each assignment seeing the ones before it).
UPDATE tenure_tasks
SET enabled = 0,
    freed_how = CASE WHEN owner IS NULL THEN freed_how ELSE 'released' END,
    freed_at = CASE WHEN owner IS NULL THEN freed_at ELSE {now} END,
    owner = NULL, version = version + 1, updated_at = {now}
WHERE kind = :kind AND key = :key;

-- name: trigger
UPDATE tenure_tasks SET trigger_at = {now}, version = version + 1, updated_at = {now}
WHERE kind = :kind AND key = :key;

-- name: delete_task
DELETE FROM tenure_tasks WHERE kind = :kind AND key = :key;

-- name: sync_read
SELECT key, every, cron, params, enabled FROM tenure_tasks WHERE kind = :kind;

-- name: sync_update
UPDATE tenure_tasks
SET every = :every, cron = :cron, params = :params, enabled = :enabled,
    version = version + 1, updated_at = {now}
WHERE kind = :kind AND key = :key;

-- name: sync_disable
-- :keys is a JSON array of keys.
UPDATE tenure_tasks SET enabled = 0, version = version + 1, updated_at = {now}
WHERE kind = :kind AND key IN (SELECT value FROM json_each(:keys)) AND enabled = 1;

-- name: sync_remove
DELETE FROM tenure_tasks WHERE kind = :kind AND key IN (SELECT value FROM json_each(:keys));

-- name: worker_is_live
SELECT expires_at > {now}, liveness IS NOT NULL FROM tenure_workers WHERE id = :worker;

-- name: end_lease
-- The worker's liveness lock was free when this process took it: its process is gone.
UPDATE tenure_workers SET expires_at = {now} WHERE id = :worker AND expires_at > {now};

-- name: end_dead_leases
-- Ends, at now, the lease of every other worker whose liveness lock file is free (its
-- process is gone): run in the claim's transaction, before the candidates are read.
UPDATE tenure_workers SET expires_at = {now}
WHERE liveness IS NOT NULL AND id <> :worker AND expires_at > {now} AND tenure_lock_free(liveness);

-- name: free_expired_worker_tasks
UPDATE tenure_tasks
SET owner = NULL, freed_how = 'expired',
    freed_at = (SELECT expires_at FROM tenure_workers WHERE id = :worker)
WHERE owner = :worker;

-- name: upsert_worker
INSERT INTO tenure_workers (id, host, pid, started_at, heartbeat_at, expires_at, draining, kinds, liveness)
VALUES (:worker, :host, :pid, {now}, {now}, {now} + :ttl, 0, :kinds, :liveness)
ON CONFLICT (id) DO UPDATE SET
    host = excluded.host, pid = excluded.pid, started_at = excluded.started_at,
    heartbeat_at = excluded.heartbeat_at, expires_at = excluded.expires_at, draining = 0,
    kinds = excluded.kinds, liveness = excluded.liveness,
    runs_waiting = NULL, oldest_waiting = NULL, concurrency = NULL
RETURNING expires_at, heartbeat_at, draining;

-- name: renew_lease
-- The worker's load travels with the renewal (no statement of its own).
UPDATE tenure_workers SET heartbeat_at = {now}, expires_at = {now} + :ttl,
    runs_waiting = :runs_waiting, oldest_waiting = :oldest_waiting, concurrency = :concurrency
WHERE id = :worker AND expires_at > {now}
RETURNING expires_at, heartbeat_at, draining;

-- name: set_draining
UPDATE tenure_workers SET draining = :draining WHERE id = :worker;

-- name: release_all
UPDATE tenure_tasks SET owner = NULL, freed_how = 'released', freed_at = {now}
WHERE owner = :worker;

-- name: release_tasks
-- One statement for a whole batch: :tasks is a JSON array of [kind, key, term]; each task
-- is freed only where this worker still owns it at that term.
UPDATE tenure_tasks SET owner = NULL, freed_how = 'released', freed_at = {now}
WHERE owner = :worker
  AND (kind, key, term) IN (SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'),
                                   json_extract(value, '$[2]')
                            FROM json_each(:tasks));

-- name: delete_worker
DELETE FROM tenure_workers WHERE id = :worker;

-- name: list_workers
SELECT w.id, w.host, w.pid, w.started_at, w.heartbeat_at, w.expires_at, w.draining,
       (SELECT count(*) FROM tenure_tasks t WHERE t.owner = w.id), w.kinds,
       w.runs_waiting, w.oldest_waiting, w.concurrency
FROM tenure_workers w ORDER BY w.id;

-- name: reap_workers
DELETE FROM tenure_workers
WHERE expires_at < {now} - :older_than
  AND NOT EXISTS (SELECT 1 FROM tenure_tasks t WHERE t.owner = tenure_workers.id);

-- name: claim_candidates
SELECT t.kind, t.key, w.expires_at, t.owner IS NOT NULL
FROM tenure_tasks t LEFT JOIN tenure_workers w ON w.id = t.owner
WHERE t.enabled = 1
  AND (t.owner IS NULL OR w.id IS NULL OR w.expires_at <= {now})
  AND t.kind IN (SELECT value FROM json_each(:kinds))
ORDER BY t.kind, t.key
LIMIT :limit;

-- name: take_terms
UPDATE tenure_counters SET value = value + :count WHERE name = 'term' RETURNING value;

-- name: claim_one
UPDATE tenure_tasks
SET owner = :worker, term = :term,
    freed_how = CASE WHEN :had_owner THEN 'expired' ELSE freed_how END,
    freed_at = CASE WHEN :had_owner THEN coalesce(:old_expiry, {now}) ELSE freed_at END
WHERE kind = :kind AND key = :key;

-- name: claimed_tasks
-- The tasks a claim just took: its worker's, at the terms it drew, in term order.
SELECT {task_columns} FROM tenure_tasks
WHERE owner = :worker AND term BETWEEN :first AND :last
ORDER BY term;

-- name: cluster_view
-- One statement, so one consistent snapshot: the change counter ('changes'), the
-- enabled tasks of each kind ('kind'), then each live, non-draining worker and the
-- kinds it runs and when it registered ('worker'). A worker whose liveness lock file is
-- free is dead, whatever its lease says.
SELECT 'changes', NULL, value, NULL, NULL FROM tenure_counters WHERE name = 'changes'
UNION ALL
SELECT 'kind', kind, count(*), NULL, NULL FROM tenure_tasks WHERE enabled = 1 GROUP BY kind
UNION ALL
SELECT 'worker', id, 0, kinds, started_at FROM tenure_workers WHERE expires_at > {now} AND draining = 0 AND (liveness IS NULL OR NOT tenure_lock_free(liveness));

-- name: bump_changes
UPDATE tenure_counters SET value = value + 1 WHERE name = 'changes';

-- name: fence_check
SELECT 1 FROM tenure_tasks t JOIN tenure_workers w ON w.id = t.owner
WHERE t.kind = :kind AND t.key = :key AND t.owner = :worker AND t.term = :term
  AND w.expires_at > {now};

-- name: advance_slot
-- A triggered run's slot is the trigger time; running it answers every trigger asked
-- up to then, so a later owner does not run it again.
UPDATE tenure_tasks
SET last_slot = max(coalesce(last_slot, :slot), :slot),
    trigger_at = CASE WHEN :triggered AND trigger_at <= :slot THEN NULL ELSE trigger_at END
WHERE kind = :kind AND key = :key AND term = :term;

-- name: insert_run
INSERT INTO tenure_runs
    (kind, key, worker, term, scheduled_at, started_at, ended_at, outcome, error)
VALUES (:kind, :key, :worker, :term, :scheduled_at, :started_at, :ended_at, :outcome, :error);

-- name: list_runs
SELECT id, kind, key, worker, term, scheduled_at, started_at, ended_at, outcome, error
FROM tenure_runs
WHERE (:kind IS NULL OR kind = :kind) AND (:key IS NULL OR key = :key)
  AND (:worker IS NULL OR worker = :worker) AND (:outcome IS NULL OR outcome = :outcome)
ORDER BY id DESC
LIMIT :limit;

-- name: prune_runs
DELETE FROM tenure_runs WHERE ended_at < {now} - :older_than;

-- name: set_pause
-- Pausing again keeps the first pause's time and author; asking to cancel is remembered.
INSERT INTO tenure_pauses (scope, paused_at, paused_by, cancel)
VALUES (:scope, {now}, :by, :cancel)
ON CONFLICT (scope) DO UPDATE SET cancel = max(tenure_pauses.cancel, excluded.cancel);

-- name: get_pause
SELECT scope, paused_at, paused_by, cancel FROM tenure_pauses WHERE scope = :scope;

-- name: lock_pause
-- get_pause: the write lock (BEGIN IMMEDIATE) already keeps other writers out.
SELECT scope, paused_at, paused_by, cancel FROM tenure_pauses WHERE scope = :scope;

-- name: list_pauses
SELECT scope, paused_at, paused_by, cancel FROM tenure_pauses ORDER BY scope;

-- name: delete_pause
DELETE FROM tenure_pauses WHERE scope = :scope;
