-- Named queries of the PostgreSQL store. {now} is the database clock at the moment of
-- evaluation (clock_timestamp(), not the frozen transaction start of now()), in epoch
-- seconds. Every value comes in as a bound parameter.

-- name: now
SELECT {now};

-- name: meta_exists
SELECT to_regclass('tenure_meta') IS NOT NULL;

-- name: create_meta
CREATE TABLE IF NOT EXISTS tenure_meta (name text PRIMARY KEY, value text NOT NULL);

-- name: schema_version
SELECT value FROM tenure_meta WHERE name = 'schema_version';

-- name: set_schema_version
INSERT INTO tenure_meta (name, value) VALUES ('schema_version', %(version)s)
ON CONFLICT (name) DO UPDATE SET value = excluded.value;

-- name: migrate_lock
-- Serialises concurrent `tenure migrate` runs until the migration commits (an
-- arbitrary constant of ours).
SELECT pg_advisory_xact_lock(7245311802);

-- name: publish_kind
INSERT INTO tenure_kinds (kind, every, cron, timeout, updated_at)
VALUES (%(kind)s, %(every)s, %(cron)s, %(timeout)s, {now})
ON CONFLICT (kind) DO UPDATE SET
    every = excluded.every, cron = excluded.cron,
    timeout = excluded.timeout, updated_at = excluded.updated_at;

-- name: list_kinds
SELECT kind, every, cron, timeout FROM tenure_kinds ORDER BY kind;

-- name: insert_task
INSERT INTO tenure_tasks (kind, key, every, cron, params, enabled, created_at, updated_at)
VALUES (%(kind)s, %(key)s, %(every)s, %(cron)s, %(params)s, %(enabled)s, {now}, {now})
RETURNING {task_columns};

-- name: get_task
SELECT {task_columns} FROM tenure_tasks WHERE kind = %(kind)s AND key = %(key)s;

-- name: list_tasks
SELECT {task_columns} FROM tenure_tasks
WHERE (%(kind)s::text IS NULL OR kind = %(kind)s) AND (%(owner)s::text IS NULL OR owner = %(owner)s)
ORDER BY kind, key;

-- name: owned_tasks
SELECT {task_columns} FROM tenure_tasks WHERE owner = %(worker)s ORDER BY kind, key;

-- name: set_enabled
UPDATE tenure_tasks SET enabled = %(enabled)s, version = version + 1, updated_at = {now}
WHERE kind = %(kind)s AND key = %(key)s
RETURNING {task_columns};

-- name: disable_cancel
-- Disable and free in one statement (freed_* before owner: MySQL assigns left to right,
-- each assignment seeing the ones before it).
UPDATE tenure_tasks
SET enabled = false,
    freed_how = CASE WHEN owner IS NULL THEN freed_how ELSE 'released' END,
    freed_at = CASE WHEN owner IS NULL THEN freed_at ELSE {now} END,
    owner = NULL, version = version + 1, updated_at = {now}
WHERE kind = %(kind)s AND key = %(key)s
RETURNING {task_columns};

-- name: trigger
UPDATE tenure_tasks SET trigger_at = {now}, version = version + 1, updated_at = {now}
WHERE kind = %(kind)s AND key = %(key)s
RETURNING {task_columns};

-- name: delete_task
DELETE FROM tenure_tasks WHERE kind = %(kind)s AND key = %(key)s;

-- name: sync_lock
-- Serialises syncs of one kind: the kind's row stays locked until the sync commits
-- (nothing else locks kind rows).
SELECT 1 FROM tenure_kinds WHERE kind = %(kind)s FOR UPDATE;

-- name: sync_read
SELECT key, every, cron, params, enabled FROM tenure_tasks WHERE kind = %(kind)s;

-- name: sync_add
-- One statement for a batch of new tasks, given as parallel arrays. A task someone added
-- meanwhile (a single add racing the sync) is left as they made it.
INSERT INTO tenure_tasks (kind, key, every, cron, params, enabled, created_at, updated_at)
SELECT %(kind)s, d.key, d.every, d.cron, d.params, d.enabled, {now}, {now}
FROM unnest(%(keys)s::text[], %(every)s::double precision[], %(cron)s::text[],
            %(params)s::text[], %(enabled)s::boolean[]) AS d(key, every, cron, params, enabled)
ON CONFLICT (kind, key) DO NOTHING;

-- name: sync_update
UPDATE tenure_tasks t
SET every = d.every, cron = d.cron, params = d.params, enabled = d.enabled,
    version = t.version + 1, updated_at = {now}
FROM unnest(%(keys)s::text[], %(every)s::double precision[], %(cron)s::text[],
            %(params)s::text[], %(enabled)s::boolean[]) AS d(key, every, cron, params, enabled)
WHERE t.kind = %(kind)s AND t.key = d.key;

-- name: sync_disable
UPDATE tenure_tasks SET enabled = false, version = version + 1, updated_at = {now}
WHERE kind = %(kind)s AND key = ANY(%(keys)s::text[]) AND enabled;

-- name: sync_remove
DELETE FROM tenure_tasks WHERE kind = %(kind)s AND key = ANY(%(keys)s::text[]);

-- name: bump_changes
UPDATE tenure_counters SET value = value + 1 WHERE name = 'changes';

-- name: notify
SELECT pg_notify('tenure_changes', '');

-- name: worker_is_live
SELECT expires_at > {now}, liveness IS NOT NULL FROM tenure_workers WHERE id = %(worker)s FOR UPDATE;

-- name: end_lease
-- The worker's liveness lock was free when this process took it: its session is gone.
UPDATE tenure_workers SET expires_at = {now} WHERE id = %(worker)s AND expires_at > {now};

-- name: free_expired_worker_tasks
UPDATE tenure_tasks
SET owner = NULL, freed_how = 'expired',
    freed_at = (SELECT expires_at FROM tenure_workers WHERE id = %(worker)s)
WHERE owner = %(worker)s;

-- name: upsert_worker
INSERT INTO tenure_workers (id, host, pid, started_at, heartbeat_at, expires_at, draining, kinds, liveness)
VALUES (%(worker)s, %(host)s, %(pid)s, {now}, {now}, {now} + %(ttl)s, false, %(kinds)s, %(liveness)s)
ON CONFLICT (id) DO UPDATE SET
    host = excluded.host, pid = excluded.pid, started_at = excluded.started_at,
    heartbeat_at = excluded.heartbeat_at, expires_at = excluded.expires_at, draining = false,
    kinds = excluded.kinds, liveness = excluded.liveness,
    runs_waiting = NULL, oldest_waiting = NULL, concurrency = NULL
-- Two processes registering the same new id at once: the second finds a live row here
-- and gets no row back (WorkerIdInUse) instead of overwriting the first.
WHERE tenure_workers.expires_at <= {now}
RETURNING expires_at, heartbeat_at, draining;

-- name: renew_lease
-- The worker's load travels with the renewal (no statement of its own).
UPDATE tenure_workers SET heartbeat_at = {now}, expires_at = {now} + %(ttl)s,
    runs_waiting = %(runs_waiting)s, oldest_waiting = %(oldest_waiting)s, concurrency = %(concurrency)s
WHERE id = %(worker)s AND expires_at > {now}
RETURNING expires_at, heartbeat_at, draining;

-- name: set_draining
UPDATE tenure_workers SET draining = %(draining)s WHERE id = %(worker)s;

-- name: release_all
UPDATE tenure_tasks SET owner = NULL, freed_how = 'released', freed_at = {now}
WHERE owner = %(worker)s;

-- name: release_tasks
-- One statement for a whole batch, passed as one JSON array of [kind, key, term]: each
-- task is freed only where this worker still owns it at that term (a statement per task
-- cost a round trip each: 500 releases took 42 s on a saturated server). Rows are locked
-- in key order, like every other writer's, so that two never wait on each other; the
-- owner and term are checked again on the row as locked.
WITH gone AS (
    SELECT e->>0 AS kind, e->>1 AS key, (e->>2)::bigint AS term
    FROM jsonb_array_elements(%(tasks)s::jsonb) AS e
), locked AS (
    SELECT t.kind, t.key FROM tenure_tasks t JOIN gone g ON g.kind = t.kind AND g.key = t.key AND g.term = t.term
    WHERE t.owner = %(worker)s
    ORDER BY t.kind, t.key
    FOR UPDATE OF t
)
UPDATE tenure_tasks t SET owner = NULL, freed_how = 'released', freed_at = {now}
FROM gone g JOIN locked l ON l.kind = g.kind AND l.key = g.key
WHERE t.kind = g.kind AND t.key = g.key AND t.term = g.term AND t.owner = %(worker)s;

-- name: delete_worker
DELETE FROM tenure_workers WHERE id = %(worker)s;

-- name: list_workers
SELECT w.id, w.host, w.pid, w.started_at, w.heartbeat_at, w.expires_at, w.draining,
       (SELECT count(*) FROM tenure_tasks t WHERE t.owner = w.id), w.kinds,
       w.runs_waiting, w.oldest_waiting, w.concurrency
FROM tenure_workers w ORDER BY w.id;

-- name: reap_workers
DELETE FROM tenure_workers w
WHERE w.expires_at < {now} - %(older_than)s
  AND NOT EXISTS (SELECT 1 FROM tenure_tasks t WHERE t.owner = w.id);

-- name: claim
-- First `dead` ends, at the server's now, the lease of every other worker whose liveness
-- lock is free (its session is gone). It locks those rows with SKIP LOCKED: a row another
-- transaction holds (a concurrent claim ending that very lease, or a registration taking
-- the id over) is passed over, never waited for. Without it every claimer after a crash
-- queued behind the first one's whole claim for the dead worker's row (40 claimers after
-- a kill of 10, past their lock wait), only to find the lease already ended. The
-- sub-statements of one statement share a snapshot, so the candidates do not see that
-- update either way: an owner counts as live only while its lock is held too, so a dead
-- worker's tasks are free to this claim whichever transaction ends its lease.
-- The candidates come from index walks, each locking up to `limit` rows in key order:
-- `free`, tasks with no owner (the partial index tenure_tasks_free), and `taken`, per
-- owner that is not live, its tasks (the index on owner, kind, key; the owners are read
-- off it one value at a time, so that a task whose owner has no row at all is found too). One scan
-- of every enabled task with a liveness check per owned row cost a claim O(tasks): 80-160
-- ms at 100,000 tasks, 20 s for one worker to claim them all. The first `limit` of both
-- by key are claimed. Liveness of the old owner stays a subquery in the WHERE: when a
-- candidate row changed since the snapshot, PostgreSQL re-checks the WHERE against the
-- new row version as it locks it, and only a subquery is re-evaluated for it. SKIP
-- LOCKED passes over rows a fenced transaction or another claim holds, so a claim never
-- waits behind a commit in progress.
-- The walk of the free tasks starts `start` free tasks in (`from_start`, then the ones
-- before that place, `before_start`): workers that claim together each pass a different
-- `start` (their rank times their share), so each takes its own stretch of keys instead
-- of all walking from the first key over the rows the others have just locked. 40 claims
-- of 2,500 at once cost PostgreSQL 30-38 us a task all from the first key, 11.5 from
-- their own places (finding the place is an index-only walk that locks nothing: ~0.1 us
-- a task passed).
-- The tasks are then updated by the row addresses (ctid) the walks locked, not by a join
-- on kind and key, for which PostgreSQL, once it has statistics, read every task of the
-- table into a hash (a claim of 2,500 among 100,000 tasks: 50 ms instead of 25). A row
-- that changed between this statement's snapshot and its lock is not updated (its new
-- version is not in the snapshot): this claim takes one task fewer, a later one takes it.
WITH RECURSIVE held AS ({held_locks}),
dying AS (
    SELECT id FROM tenure_workers
    WHERE liveness IS NOT NULL AND id <> %(worker)s AND expires_at > {now}
      AND liveness NOT IN (SELECT key FROM held)
    FOR UPDATE SKIP LOCKED
),
dead AS (
    -- Its tasks are free: wake the other workers (NOTIFY at commit, as a release does) to
    -- claim their shares now; this claimer may have been woken alone, by its watch.
    UPDATE tenure_workers w SET expires_at = {now}
    FROM dying WHERE w.id = dying.id
    RETURNING w.id, w.expires_at, pg_notify('tenure_changes', '')
),
owners AS (
    (SELECT owner FROM tenure_tasks WHERE owner IS NOT NULL ORDER BY owner LIMIT 1)
    UNION ALL
    SELECT (SELECT t.owner FROM tenure_tasks t WHERE t.owner > o.owner ORDER BY t.owner LIMIT 1)
    FROM owners o WHERE o.owner IS NOT NULL
),
orphaned AS (
    SELECT o.owner FROM owners o
    WHERE o.owner IS NOT NULL AND NOT EXISTS (
        SELECT 1 FROM tenure_workers w
        WHERE w.id = o.owner AND w.expires_at > {now}
          AND (w.liveness IS NULL OR w.liveness IN (SELECT key FROM held)))
),
place AS (
    -- One row: the free task `start` places in, or ('', ''), before every key, if there
    -- are not that many.
    SELECT coalesce(max(f.kind), '') AS kind, coalesce(max(f.key), '') AS key FROM (
        SELECT s.kind, s.key FROM tenure_tasks s
        WHERE s.owner IS NULL AND s.enabled AND s.kind = ANY(%(kinds)s)
        ORDER BY s.kind, s.key
        OFFSET %(start)s LIMIT 1
    ) f
),
from_start AS (
    SELECT t.ctid AS tid, t.kind, t.key, false AS had_owner, NULL::double precision AS old_expiry
    FROM tenure_tasks t
    WHERE t.owner IS NULL AND t.enabled
      AND t.kind = ANY(%(kinds)s)
      AND (t.kind, t.key) >= (SELECT kind, key FROM place)
      AND EXISTS (SELECT 1 FROM tenure_workers me WHERE me.id = %(worker)s AND me.expires_at > {now})
    ORDER BY t.kind, t.key
    LIMIT %(limit)s
    FOR UPDATE OF t SKIP LOCKED
),
before_start AS (
    SELECT t.ctid AS tid, t.kind, t.key, false AS had_owner, NULL::double precision AS old_expiry
    FROM tenure_tasks t
    WHERE t.owner IS NULL AND t.enabled
      AND t.kind = ANY(%(kinds)s)
      AND (t.kind, t.key) < (SELECT kind, key FROM place)
      AND EXISTS (SELECT 1 FROM tenure_workers me WHERE me.id = %(worker)s AND me.expires_at > {now})
    ORDER BY t.kind, t.key
    LIMIT %(limit)s - (SELECT count(*) FROM from_start)
    FOR UPDATE OF t SKIP LOCKED
),
free AS (SELECT * FROM from_start UNION ALL SELECT * FROM before_start),
taken AS (
    SELECT x.* FROM orphaned o CROSS JOIN LATERAL (
        SELECT t.ctid AS tid, t.kind, t.key, true AS had_owner,
               coalesce((SELECT d.expires_at FROM dead d WHERE d.id = t.owner),
                        (SELECT w.expires_at FROM tenure_workers w WHERE w.id = t.owner)) AS old_expiry
        FROM tenure_tasks t
        WHERE t.owner = o.owner AND t.enabled
          AND t.kind = ANY(%(kinds)s)
          AND NOT EXISTS (
                SELECT 1 FROM tenure_workers w
                WHERE w.id = t.owner AND w.expires_at > {now}
                  AND (w.liveness IS NULL OR w.liveness IN (SELECT key FROM held)))
          AND EXISTS (SELECT 1 FROM tenure_workers me WHERE me.id = %(worker)s AND me.expires_at > {now})
        ORDER BY t.kind, t.key
        LIMIT %(limit)s
        FOR UPDATE OF t SKIP LOCKED
    ) x
),
cand AS (
    SELECT * FROM free UNION ALL SELECT * FROM taken
    ORDER BY kind, key
    LIMIT %(limit)s
)
UPDATE tenure_tasks t
SET owner = %(worker)s, term = nextval('tenure_term_seq'),
    freed_how = CASE WHEN cand.had_owner THEN 'expired' ELSE t.freed_how END,
    freed_at = CASE WHEN cand.had_owner THEN least(coalesce(cand.old_expiry, {now}), {now}) ELSE t.freed_at END
FROM cand
WHERE t.ctid = ANY(ARRAY(SELECT tid FROM cand)) AND t.ctid = cand.tid AND t.kind = cand.kind AND t.key = cand.key
RETURNING {task_columns_t};

-- name: cluster_view
-- One statement, so one consistent snapshot: the change counter ('changes', with the
-- version of its row: its xmin), the enabled tasks of each kind ('kind'), then each live,
-- non-draining worker, the kinds it runs and when it registered ('worker'). A worker
-- whose liveness lock is free is dead, whatever its lease says.
-- Every change to which tasks exist or are enabled bumps the counter in its own
-- transaction, so the counts are those of the last read while the counter's value and
-- row version are those the caller passes ('changes', 'stamp'): then the tasks are not
-- counted at all (the uncorrelated NOT EXISTS is a one-time filter), and the read costs
-- O(workers), not O(tasks). The caller tells the two cases apart by the stamp it gets.
WITH c AS (SELECT value::bigint AS changes, xmin::text AS stamp FROM tenure_counters WHERE name = 'changes')
SELECT 'changes', c.stamp, c.changes, NULL::text, NULL::double precision FROM c
UNION ALL
SELECT 'kind', kind, count(*), NULL, NULL FROM tenure_tasks
WHERE enabled AND NOT EXISTS (SELECT 1 FROM c WHERE c.changes = %(changes)s AND c.stamp = %(stamp)s)
GROUP BY kind
UNION ALL
SELECT 'worker', id, 0, kinds, started_at FROM tenure_workers WHERE expires_at > {now} AND NOT draining
  AND (liveness IS NULL OR liveness IN (SELECT key FROM ({held_locks}) AS held));

-- name: fence
-- The fence (schema version 2): locks the task row if the worker owns it at this term
-- with a live lease, and records the slot when one is given; otherwise raises TN001,
-- which fails the transaction.
SELECT tenure_fence(%(kind)s, %(key)s, %(worker)s, %(term)s, %(slot)s::double precision);

-- name: advance_slots
-- One statement for a whole batch, passed as one JSON array of
-- [kind, key, term, slot, clear_upto], one entry per task and term (merged by the
-- caller): a statement per row costs the server a statement (and, in autocommit, a
-- commit) per run, and arrays of text cost the client a quoting pass per element. A
-- triggered run's slot is the trigger time; running it answers every trigger asked up to
-- then (clear_upto), so a later owner does not run it again. Rows are locked in key
-- order, like every other writer's, so that two never wait on each other.
-- A row that would not change is neither locked nor written: a fenced commit already
-- recorded its run's slot, and an update to the same values still writes a new row version.
WITH done AS (
    SELECT e->>0 AS kind, e->>1 AS key, (e->>2)::bigint AS term, (e->>3)::float8 AS slot,
           (e->>4)::float8 AS clear_upto
    FROM jsonb_array_elements(%(slots)s::jsonb) AS e
), locked AS (
    SELECT t.kind, t.key FROM tenure_tasks t JOIN done d ON d.kind = t.kind AND d.key = t.key AND d.term = t.term
    WHERE t.last_slot IS NULL OR t.last_slot < d.slot OR t.trigger_at <= d.clear_upto
    ORDER BY t.kind, t.key
    FOR UPDATE OF t
)
UPDATE tenure_tasks t
SET last_slot = greatest(coalesce(t.last_slot, d.slot), d.slot),
    trigger_at = CASE WHEN t.trigger_at <= d.clear_upto THEN NULL ELSE t.trigger_at END
FROM done d JOIN locked l ON l.kind = d.kind AND l.key = d.key
WHERE t.kind = d.kind AND t.key = d.key AND t.term = d.term
  AND (t.last_slot IS NULL OR t.last_slot < d.slot OR t.trigger_at <= d.clear_upto);

-- name: insert_runs
-- One statement for a whole batch, passed as one JSON array of
-- [kind, key, worker, term, scheduled_at, started_at, ended_at, outcome, error];
-- ids in the batch's order.
INSERT INTO tenure_runs
    (kind, key, worker, term, scheduled_at, started_at, ended_at, outcome, error)
SELECT e->>0, e->>1, e->>2, (e->>3)::bigint, (e->>4)::float8, (e->>5)::float8,
       (e->>6)::float8, e->>7, e->>8
FROM jsonb_array_elements(%(runs)s::jsonb) WITH ORDINALITY AS r(e, n)
ORDER BY n;

-- name: list_runs
SELECT id, kind, key, worker, term, scheduled_at, started_at, ended_at, outcome, error
FROM tenure_runs
WHERE (%(kind)s::text IS NULL OR kind = %(kind)s) AND (%(key)s::text IS NULL OR key = %(key)s)
  AND (%(worker)s::text IS NULL OR worker = %(worker)s)
  AND (%(outcome)s::text IS NULL OR outcome = %(outcome)s)
ORDER BY id DESC
LIMIT %(limit)s;

-- name: prune_runs
DELETE FROM tenure_runs WHERE ended_at < {now} - %(older_than)s;

-- name: set_pause
-- Pausing again keeps the first pause's time and author; asking to cancel is remembered.
INSERT INTO tenure_pauses (scope, paused_at, paused_by, cancel)
VALUES (%(scope)s, {now}, %(by)s, %(cancel)s)
ON CONFLICT (scope) DO UPDATE SET cancel = tenure_pauses.cancel OR excluded.cancel;

-- name: get_pause
SELECT scope, paused_at, paused_by, cancel FROM tenure_pauses WHERE scope = %(scope)s;

-- name: lock_pause
-- get_pause, locking the row until the transaction ends.
SELECT scope, paused_at, paused_by, cancel FROM tenure_pauses WHERE scope = %(scope)s FOR UPDATE;

-- name: list_pauses
SELECT scope, paused_at, paused_by, cancel FROM tenure_pauses ORDER BY scope;

-- name: delete_pause
DELETE FROM tenure_pauses WHERE scope = %(scope)s;

-- name: liveness_take
-- A worker's liveness lock (tenure.store.liveness), on a connection kept for it alone.
SELECT pg_try_advisory_lock(%(key)s), pg_backend_pid();

-- name: liveness_mine
-- Does this session hold the lock it took a statement ago? Not behind a
-- transaction-pooling proxy, where this statement may run in another server session.
SELECT EXISTS (SELECT 1 FROM pg_locks l
               WHERE l.locktype = 'advisory' AND l.granted AND l.pid = pg_backend_pid()
                 AND l.objsubid = 1 AND l.objid = (%(key)s & 4294967295)::oid
                 AND l.classid = (%(key)s >> 32)::oid);

-- name: listen
-- On the liveness session (tenure.store.postgresql._AdvisoryLiveness), or on a connection
-- of its own with liveness=lease.
LISTEN tenure_changes;

-- name: liveness_unlock
SELECT pg_advisory_unlock(%(key)s);

-- name: liveness_terminate
-- Ends a former liveness session that the server still keeps (a half-open connection),
-- only if that backend still holds this worker's lock (its pid may have been reused).
SELECT pg_terminate_backend(l.pid) FROM pg_locks l
WHERE l.pid = %(pid)s AND l.locktype = 'advisory' AND l.granted
  AND l.objsubid = 1 AND l.objid = (%(key)s & 4294967295)::oid AND l.classid = (%(key)s >> 32)::oid;

-- name: watch_wait
-- Waits until the watched worker's liveness lock is free (tenure.store.liveness: watching),
-- on a connection kept for it: shared, and for the statement's own transaction only, so
-- that it is let go the moment it is granted.
SELECT pg_advisory_xact_lock_shared(%(key)s);
