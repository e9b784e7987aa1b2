-- Named queries of the MySQL/MariaDB store. Every value comes in as a bound parameter
-- (%(name)s); the {placeholders} are constant SQL fragments filled when this file loads:
--
-- {now}       the server's clock when the expression is *evaluated*, in epoch seconds
--             (SYSDATE(6), made independent of the session time zone; see mysql.py).
--             Every lease decision uses it. Unlike NOW(6), which is the time the
--             statement *started*, it is not stale after the statement waited for a
--             row lock.
-- {stmt_now}  the statement's start time (UTC_TIMESTAMP(6)): a constant, so an index
--             range can use it. Only for housekeeping, never for a lease decision.
-- {collation} the binary NO PAD collation of the schema, for values from JSON_TABLE.
--
-- MySQL has no UPDATE … RETURNING: a write is followed by a read in the same
-- transaction. Row counts are found rows (the connection sets CLIENT_FOUND_ROWS).
-- Liveness of a worker is always a subquery: InnoDB does not lock the rows a subquery
-- reads in a SELECT … FOR UPDATE or an UPDATE, so a claim or a fence never waits for
-- (or skips) a worker row that a renewal holds.

-- name: now
SELECT {now};

-- name: meta_exists
SELECT COUNT(*) FROM information_schema.tables
WHERE table_schema = DATABASE() AND table_name = 'tenure_meta';

-- name: create_meta
CREATE TABLE tenure_meta (
    name  VARCHAR(64) NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (name)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- name: schema_version
SELECT value FROM tenure_meta WHERE name = 'schema_version';

-- name: set_schema_version
INSERT INTO tenure_meta (name, value) VALUES ('schema_version', %(version)s)
ON DUPLICATE KEY UPDATE value = %(version)s;

-- name: migrate_lock
-- Serialises concurrent `tenure migrate` runs on one database. Lock names are
-- server-wide and at most 64 characters: hash the database name into it.
SELECT GET_LOCK(CONCAT('tenure-migrate-', LEFT(SHA1(DATABASE()), 40)), %(wait)s);

-- name: migrate_unlock
SELECT RELEASE_LOCK(CONCAT('tenure-migrate-', LEFT(SHA1(DATABASE()), 40)));

-- name: notes_off
-- Migration steps that can run again (DROP PROCEDURE IF EXISTS…) leave a note when there
-- was nothing to do, which the driver would log as a warning.
SET SESSION sql_notes = 0;

-- name: notes_default
SET SESSION sql_notes = DEFAULT;

-- name: publish_kind
INSERT INTO tenure_kinds (kind, every, cron, timeout, updated_at)
VALUES (%(kind)s, %(every)s, %(cron)s, %(timeout)s, {now})
ON DUPLICATE KEY UPDATE
    every = %(every)s, cron = %(cron)s, timeout = %(timeout)s, updated_at = {now};

-- name: list_kinds
SELECT kind, every, cron, timeout FROM tenure_kinds ORDER BY kind;

-- name: insert_task
INSERT INTO tenure_tasks (kind, `key`, every, cron, params, enabled, created_at, updated_at)
SELECT %(kind)s, %(key)s, %(every)s, %(cron)s, %(params)s, %(enabled)s, n.t, n.t
FROM (SELECT {now} AS t) AS n;

-- name: get_task
SELECT {task_columns} FROM tenure_tasks WHERE kind = %(kind)s AND `key` = %(key)s;

-- name: list_tasks
SELECT {task_columns} FROM tenure_tasks
WHERE (%(kind)s IS NULL OR kind = %(kind)s) AND (%(owner)s IS NULL OR owner = %(owner)s)
ORDER BY kind, `key`;

-- name: owned_tasks
SELECT {task_columns} FROM tenure_tasks WHERE owner = %(worker)s ORDER BY kind, `key`;

-- name: set_enabled
UPDATE tenure_tasks SET enabled = %(enabled)s, version = version + 1, updated_at = {now}
WHERE kind = %(kind)s AND `key` = %(key)s;

-- name: disable_cancel
-- Disable and free in one statement (freed_* before owner: MySQL assigns left to right,
-- each assignment seeing the ones before it).
UPDATE tenure_tasks
SET enabled = false,
    freed_how = CASE WHEN owner IS NULL THEN freed_how ELSE 'released' END,
    freed_at = CASE WHEN owner IS NULL THEN freed_at ELSE {now} END,
    owner = NULL, version = version + 1, updated_at = {now}
WHERE kind = %(kind)s AND `key` = %(key)s;

-- name: trigger
UPDATE tenure_tasks SET trigger_at = {now}, version = version + 1, updated_at = {now}
WHERE kind = %(kind)s AND `key` = %(key)s;

-- name: delete_task
DELETE FROM tenure_tasks WHERE kind = %(kind)s AND `key` = %(key)s;

-- name: sync_lock
-- Serialises syncs of one kind: the kind's row stays locked until the sync commits
-- (nothing else locks kind rows).
SELECT 1 FROM tenure_kinds WHERE kind = %(kind)s FOR UPDATE;

-- name: sync_read
SELECT `key`, every, cron, params, enabled FROM tenure_tasks WHERE kind = %(kind)s;

-- name: sync_add
-- One statement for a batch of new tasks: %(tasks)s is a JSON array of
-- [key, every, cron, params, enabled]. A task someone added meanwhile (a single add
-- racing the sync) is left as they made it: the update assigns a column to itself.
INSERT INTO tenure_tasks (kind, `key`, every, cron, params, enabled, created_at, updated_at)
SELECT %(kind)s, d.`key`, d.every, d.cron, d.params, d.enabled, n.t, n.t
FROM JSON_TABLE(%(tasks)s, '$[*]' COLUMNS (
           `key`   VARCHAR(200) PATH '$[0]',
           every   DOUBLE       PATH '$[1]',
           cron    VARCHAR(255) PATH '$[2]',
           params  LONGTEXT     PATH '$[3]',
           enabled INT          PATH '$[4]')) AS d
    CROSS JOIN (SELECT {now} AS t) AS n
WHERE TRUE  -- so that ON below cannot be read as the join's
ON DUPLICATE KEY UPDATE id = tenure_tasks.id;

-- name: sync_update
-- The same array; the JSON table is read first, then each task row by its unique key.
UPDATE JSON_TABLE(%(tasks)s, '$[*]' COLUMNS (
           `key`   VARCHAR(200) PATH '$[0]',
           every   DOUBLE       PATH '$[1]',
           cron    VARCHAR(255) PATH '$[2]',
           params  LONGTEXT     PATH '$[3]',
           enabled INT          PATH '$[4]')) AS d
    STRAIGHT_JOIN tenure_tasks t
        ON t.kind = %(kind)s AND t.`key` = d.`key` COLLATE {collation}
SET t.every = d.every, t.cron = d.cron, t.params = d.params, t.enabled = d.enabled,
    t.version = t.version + 1, t.updated_at = {now};

-- name: sync_disable
-- %(keys)s is a JSON array of keys.
UPDATE JSON_TABLE(%(keys)s, '$[*]' COLUMNS (`key` VARCHAR(200) PATH '$')) AS d
    STRAIGHT_JOIN tenure_tasks t
        ON t.kind = %(kind)s AND t.`key` = d.`key` COLLATE {collation}
SET t.enabled = FALSE, t.version = t.version + 1, t.updated_at = {now}
WHERE t.enabled;

-- name: sync_remove
DELETE t FROM JSON_TABLE(%(keys)s, '$[*]' COLUMNS (`key` VARCHAR(200) PATH '$')) AS d
    STRAIGHT_JOIN tenure_tasks t
        ON t.kind = %(kind)s AND t.`key` = d.`key` COLLATE {collation};

-- name: bump_changes
-- The stamp (schema version 9) tells this change from the one of the same number in
-- another database (a restore, a schema made again): this session's id and the time.
UPDATE tenure_counters SET value = value + 1, stamp = CONCAT(CONNECTION_ID(), '@', {stmt_now})
WHERE name = 'changes';

-- name: worker_is_live
-- Locks the worker's row (if any) until the registration commits.
SELECT expires_at > {now}, liveness IS NOT NULL FROM tenure_workers WHERE id = %(worker)s FOR UPDATE;

-- name: end_lease
-- The worker's liveness lock was free when this process took it: its session is gone.
UPDATE tenure_workers SET expires_at = {now} WHERE id = %(worker)s AND expires_at > {now};

-- name: dead_workers
-- Every other worker whose liveness lock is free (its session is gone) and whose lease
-- still runs: the first statement of a claim. A plain read, which locks no row and waits
-- on none: with no dead worker (nearly always) the claim touches no worker row. (An
-- UPDATE here locked every worker row it scanned, and waited for a dead one's row while
-- another claimer ended that lease: after a crash every claimer queued behind the first
-- one's whole claim.)
SELECT id FROM tenure_workers
WHERE liveness IS NOT NULL AND id <> %(worker)s AND expires_at > {now} AND IS_USED_LOCK(liveness) IS NULL;

-- name: lock_dead_workers
-- Of those, the rows no other transaction holds, locked until the claim commits, their
-- death checked again on the latest row. A row another claim holds (ending that very
-- lease) or a registration holds (taking the id over) is passed over, never waited for.
SELECT id FROM tenure_workers
WHERE id IN %(ids)s AND liveness IS NOT NULL AND expires_at > {now} AND IS_USED_LOCK(liveness) IS NULL
FOR UPDATE SKIP LOCKED;

-- name: end_dead_leases
-- Ends, at now, the leases of the dead workers whose rows the claim locked.
UPDATE tenure_workers SET expires_at = {now} WHERE id IN %(ids)s AND expires_at > {now};

-- name: lease_is_live
SELECT expires_at > {now} FROM tenure_workers WHERE id = %(worker)s;

-- name: free_expired_worker_tasks
UPDATE tenure_tasks
SET owner = NULL, freed_how = 'expired',
    freed_at = (SELECT w.expires_at FROM tenure_workers w WHERE w.id = %(worker)s)
WHERE owner = %(worker)s;

-- name: insert_worker
-- A plain INSERT, not an upsert: two processes registering one new id at once cannot
-- both succeed (the second gets a duplicate key, reported as WorkerIdInUse).
-- The clock is read once, so started_at = heartbeat_at = expires_at - ttl exactly.
INSERT INTO tenure_workers (id, host, pid, started_at, heartbeat_at, expires_at, draining, kinds, liveness)
SELECT %(worker)s, %(host)s, %(pid)s, n.t, n.t, n.t + %(ttl)s, FALSE, %(kinds)s, %(liveness)s
FROM (SELECT {now} AS t) AS n;

-- name: revive_worker
-- Only after worker_is_live locked the (expired) row, so the clock is not stale.
UPDATE tenure_workers w JOIN (SELECT {now} AS t) AS n
SET w.host = %(host)s, w.pid = %(pid)s, w.started_at = n.t, w.heartbeat_at = n.t,
    w.expires_at = n.t + %(ttl)s, w.draining = FALSE, w.kinds = %(kinds)s, w.liveness = %(liveness)s,
    w.runs_waiting = NULL, w.oldest_waiting = NULL, w.concurrency = NULL
WHERE w.id = %(worker)s;

-- name: renew_lease
-- {now} is evaluated after the row lock is granted, so a renewal that waited past the
-- lease's end is refused instead of reviving it.
-- The worker's load travels with the renewal (no statement of its own).
UPDATE tenure_workers SET heartbeat_at = {now}, expires_at = {now} + %(ttl)s,
    runs_waiting = %(runs_waiting)s, oldest_waiting = %(oldest_waiting)s, concurrency = %(concurrency)s
WHERE id = %(worker)s AND expires_at > {now};

-- name: lease_of
SELECT expires_at, heartbeat_at, draining FROM tenure_workers WHERE id = %(worker)s;

-- name: set_draining
UPDATE tenure_workers SET draining = %(draining)s WHERE id = %(worker)s;

-- name: release_all
UPDATE tenure_tasks SET owner = NULL, freed_how = 'released', freed_at = {now}
WHERE owner = %(worker)s;

-- name: release_tasks
-- One statement for a whole batch: %(tasks)s is a JSON array of [kind, key, term], in key
-- order (the order claims lock rows in); each task is freed only where this worker still
-- owns it at that term. The JSON table is read first, then each task row by its
-- (kind, key) key, forced as in claim_apply, so that a release never scans (and waits
-- on) other tasks' rows.
UPDATE JSON_TABLE(%(tasks)s, '$[*]' COLUMNS (
           kind  VARCHAR(64)  PATH '$[0]',
           `key` VARCHAR(200) PATH '$[1]',
           term  BIGINT       PATH '$[2]')) AS r
    STRAIGHT_JOIN tenure_tasks t FORCE INDEX (tenure_tasks_task)
        ON t.kind = r.kind COLLATE {collation} AND t.`key` = r.`key` COLLATE {collation}
           AND t.term = r.term
SET t.owner = NULL, t.freed_how = 'released', t.freed_at = {now}
WHERE t.owner = %(worker)s;

-- name: delete_worker
DELETE FROM tenure_workers WHERE id = %(worker)s;

-- name: list_workers
SELECT w.id, w.host, w.pid, w.started_at, w.heartbeat_at, w.expires_at, w.draining,
       (SELECT COUNT(*) FROM tenure_tasks t WHERE t.owner = w.id), w.kinds,
       w.runs_waiting, w.oldest_waiting, w.concurrency
FROM tenure_workers w ORDER BY w.id;

-- name: reap_candidates
-- Two steps instead of one DELETE … WHERE NOT EXISTS: MariaDB takes locks on the rows a
-- DELETE's subquery reads, which would make reaping wait on (and block) task rows.
-- A worker found here has been expired for a while, so it cannot claim tasks before
-- reap_workers (which checks the expiry again under the row lock).
SELECT w.id FROM tenure_workers w
WHERE w.expires_at < {now} - %(older_than)s
  AND NOT EXISTS (SELECT 1 FROM tenure_tasks t WHERE t.owner = w.id);

-- name: reap_workers
DELETE FROM tenure_workers WHERE id IN %(ids)s AND expires_at < {now} - %(older_than)s;

-- name: claim_place
-- The free task `start` places in (schema version 9's owner index, its NULL range, in key
-- order), where this claim's walk of the free tasks begins: workers that claim together
-- each pass a different `start` (their rank times their share), so each takes its own
-- stretch of keys instead of all walking from the first key over the rows the others
-- have just locked. An index-only read that locks nothing. No row: fewer free tasks than
-- that, and the walk begins at the first.
SELECT t.kind, t.`key` FROM tenure_tasks t FORCE INDEX (tenure_tasks_owner_key)
WHERE t.owner IS NULL AND t.enabled = TRUE AND t.kind IN %(kinds)s
LIMIT 1 OFFSET %(start)s;

-- name: claim_free
-- Locks up to `limit` tasks with no owner from the place (kind, key) on, walking the owner
-- index's NULL range (schema version 9) of the claim's kinds in key order, forced, rather
-- than by ORDER BY: with ORDER BY … LIMIT … SKIP LOCKED, MariaDB 10.11 held every free
-- row, not only those it returned, and a second claim at the same moment (two workers
-- woken by one release, or polling together) got none. SKIP LOCKED passes over rows that
-- a fenced transaction (or another claim) holds, so a claim never waits behind a commit
-- in progress. Under READ COMMITTED a locking read sees the latest committed row, and
-- InnoDB unlocks the rows it examined that did not match; the subquery on tenure_workers
-- takes no lock.
SELECT t.kind, t.`key`, 0, NULL
FROM tenure_tasks t FORCE INDEX (tenure_tasks_owner_key)
WHERE t.owner IS NULL AND t.enabled = TRUE AND t.kind IN %(kinds)s
  AND (t.kind > %(place_kind)s OR (t.kind = %(place_kind)s AND t.`key` >= %(place_key)s))
  AND EXISTS (SELECT 1 FROM tenure_workers me WHERE me.id = %(worker)s AND me.expires_at > {now})
LIMIT %(limit)s
FOR UPDATE SKIP LOCKED;

-- name: claim_free_before
-- Then, if that left room, the free tasks before the place, as claim_free.
SELECT t.kind, t.`key`, 0, NULL
FROM tenure_tasks t FORCE INDEX (tenure_tasks_owner_key)
WHERE t.owner IS NULL AND t.enabled = TRUE AND t.kind IN %(kinds)s
  AND (t.kind < %(place_kind)s OR (t.kind = %(place_kind)s AND t.`key` < %(place_key)s))
  AND EXISTS (SELECT 1 FROM tenure_workers me WHERE me.id = %(worker)s AND me.expires_at > {now})
LIMIT %(limit)s
FOR UPDATE SKIP LOCKED;

-- name: lapsed_owners
-- The owners of tasks that are not live workers: lease ended, liveness lock free (when
-- dead_workers found any, %(dead)s > 0: otherwise the lock is not asked for), or no row
-- at all. The distinct owners come off the owner index, one entry per owner, not per
-- task. A plain read: it locks nothing.
SELECT o.owner FROM (SELECT DISTINCT owner FROM tenure_tasks WHERE owner IS NOT NULL) o
WHERE NOT EXISTS (
    SELECT 1 FROM tenure_workers w WHERE w.id = o.owner AND w.expires_at > {now}
      AND (%(dead)s = 0 OR w.liveness IS NULL OR IS_USED_LOCK(w.liveness) IS NOT NULL));

-- name: claim_lapsed
-- Locks up to `limit` enabled tasks of those owners, walking the owner index, as
-- claim_free does. The owner's death is checked again on the latest row, as it locks it:
-- a worker that re-registered under its id since is live again, and keeps its tasks.
-- A dead worker whose lease another claim is ending (its row passed over) counts as dead
-- here all the same, its tasks freed at now at the latest.
SELECT t.kind, t.`key`, 1,
       (SELECT LEAST(w.expires_at, {now}) FROM tenure_workers w WHERE w.id = t.owner)
FROM tenure_tasks t FORCE INDEX (tenure_tasks_owner_key)
WHERE t.owner IN %(owners)s AND t.enabled = TRUE AND t.kind IN %(kinds)s
  AND NOT EXISTS (
        SELECT 1 FROM tenure_workers w WHERE w.id = t.owner AND w.expires_at > {now}
          AND (%(dead)s = 0 OR w.liveness IS NULL OR IS_USED_LOCK(w.liveness) IS NOT NULL))
  AND EXISTS (SELECT 1 FROM tenure_workers me WHERE me.id = %(worker)s AND me.expires_at > {now})
LIMIT %(limit)s
FOR UPDATE SKIP LOCKED;

-- name: take_terms
-- Takes `count` terms from the counter; the new value comes back as the statement's
-- insert id (LAST_INSERT_ID(expr)). The row stays locked until the claim commits, so
-- terms are handed out in commit order, and a claim that rolls back gives its terms
-- back without anyone having seen them.
UPDATE tenure_counters SET value = LAST_INSERT_ID(value + %(count)s) WHERE name = 'term';

-- name: claim_apply
-- One statement for every claimed task: %(claims)s is a JSON array of
-- [kind, key, term, had_owner, old_expiry]. The JSON table is read first
-- (STRAIGHT_JOIN), then each task row by its (kind, key) unique key, forced: on a small
-- or unanalysed table the optimizer would rather scan it, and a scanning UPDATE waits on
-- every row lock it meets, so a claim of free tasks would wait behind any open fenced
-- transaction (a multi-table UPDATE gets no semi-consistent read). Assignments read only
-- their own column and the JSON row, so their order does not matter.
UPDATE JSON_TABLE(%(claims)s, '$[*]' COLUMNS (
           kind       VARCHAR(64)  PATH '$[0]',
           `key`      VARCHAR(200) PATH '$[1]',
           term       BIGINT       PATH '$[2]',
           had_owner  INT          PATH '$[3]',
           old_expiry DOUBLE       PATH '$[4]')) AS c
    STRAIGHT_JOIN tenure_tasks t FORCE INDEX (tenure_tasks_task)
        ON t.kind = c.kind COLLATE {collation} AND t.`key` = c.`key` COLLATE {collation}
SET t.owner = %(worker)s,
    t.term = c.term,
    t.freed_how = CASE WHEN c.had_owner = 1 THEN 'expired' ELSE t.freed_how END,
    t.freed_at = CASE WHEN c.had_owner = 1 THEN COALESCE(c.old_expiry, {now}) ELSE t.freed_at END;

-- name: claimed_tasks
-- The rows claim_apply just updated, read back by their (kind, key) key from the same
-- JSON array (as many rows as claimed): a walk of the owner's tasks for the new terms
-- grew with every task it already held (the last claims of 100,000 took 40 ms).
SELECT {task_columns_t}
FROM JSON_TABLE(%(claims)s, '$[*]' COLUMNS (
           kind  VARCHAR(64)  PATH '$[0]',
           `key` VARCHAR(200) PATH '$[1]',
           term  BIGINT       PATH '$[2]')) AS c
    STRAIGHT_JOIN tenure_tasks t FORCE INDEX (tenure_tasks_task)
        ON t.kind = c.kind COLLATE {collation} AND t.`key` = c.`key` COLLATE {collation}
WHERE t.owner = %(worker)s AND t.term = c.term
ORDER BY t.term;

-- name: cluster_view
-- One statement, so one consistent snapshot: the change counter ('changes', with its
-- stamp), the enabled tasks of each kind ('kind'), then each live, non-draining worker and
-- the kinds it runs and when it registered ('worker'). A worker whose liveness lock is
-- free is dead, whatever its lease says. (The literal 'kind' names its column `kind` too:
-- an unqualified GROUP BY kind was ambiguous, and the server said so every poll.)
-- Every change to which tasks exist or are enabled bumps the counter, so the counts are
-- those of the last read while the counter's value and stamp are those the caller passes:
-- then the tasks are not counted at all (the server reads the counter's row first, as a
-- constant, and finds the WHERE impossible: 0.9 ms instead of 57 at 100,000 tasks).
SELECT 'changes', stamp, value, NULL, NULL FROM tenure_counters WHERE name = 'changes'
UNION ALL
SELECT 'kind', t.kind, COUNT(*), NULL, NULL FROM tenure_tasks t
WHERE t.enabled
  AND NOT EXISTS (SELECT 1 FROM tenure_counters c
                  WHERE c.name = 'changes' AND c.value = %(changes)s AND c.stamp = %(stamp)s)
GROUP BY t.kind
UNION ALL
SELECT 'worker', id, 0, kinds, started_at FROM tenure_workers WHERE expires_at > {now} AND NOT draining
  AND (liveness IS NULL OR IS_USED_LOCK(liveness) IS NOT NULL);

-- name: fence
-- The fence (schema version 2): locks the task row if the worker owns it at this term
-- with a live lease, and records the slot when one is given; otherwise signals an error
-- that stops the batch it is sent in.
CALL tenure_fence(%(kind)s, %(key)s, %(worker)s, %(term)s, %(slot)s);

-- name: advance_slot
-- %(slots)s is a JSON array of [kind, key, term, slot, clear_upto], one entry per task
-- (merged by the caller). A triggered run's slot is the trigger time; running it answers
-- every trigger asked up to then (clear_upto), so a later owner does not run it again.
-- Guarded by the term alone, so a former owner's slots land until the task changes term.
-- The (kind, key) key is forced, as in claim_apply, so that it never waits on the rows of
-- other tasks' fenced transactions.
UPDATE JSON_TABLE(%(slots)s, '$[*]' COLUMNS (
           kind       VARCHAR(64)  PATH '$[0]',
           `key`      VARCHAR(200) PATH '$[1]',
           term       BIGINT       PATH '$[2]',
           slot       DOUBLE       PATH '$[3]',
           clear_upto DOUBLE       PATH '$[4]')) AS s
    STRAIGHT_JOIN tenure_tasks t FORCE INDEX (tenure_tasks_task)
        ON t.kind = s.kind COLLATE {collation} AND t.`key` = s.`key` COLLATE {collation}
           AND t.term = s.term
SET t.last_slot = GREATEST(COALESCE(t.last_slot, s.slot), s.slot),
    t.trigger_at = CASE WHEN t.trigger_at <= s.clear_upto THEN NULL ELSE t.trigger_at END;

-- name: insert_run
INSERT INTO tenure_runs
    (kind, `key`, worker, term, scheduled_at, started_at, ended_at, outcome, error)
VALUES (%(kind)s, %(key)s, %(worker)s, %(term)s, %(scheduled_at)s, %(started_at)s,
        %(ended_at)s, %(outcome)s, %(error)s);

-- name: list_runs
SELECT id, kind, `key`, worker, term, scheduled_at, started_at, ended_at, outcome, error
FROM tenure_runs
WHERE (%(kind)s IS NULL OR kind = %(kind)s) AND (%(key)s IS NULL OR `key` = %(key)s)
  AND (%(worker)s IS NULL OR worker = %(worker)s)
  AND (%(outcome)s IS NULL OR outcome = %(outcome)s)
ORDER BY id DESC
LIMIT %(limit)s;

-- name: prune_runs
DELETE FROM tenure_runs WHERE ended_at < {stmt_now} - %(older_than)s;

-- name: set_pause
-- Pausing again keeps the first pause's time and author; asking to cancel is remembered.
INSERT INTO tenure_pauses (scope, paused_at, paused_by, cancel)
VALUES (%(scope)s, {now}, %(by)s, %(cancel)s)
ON DUPLICATE KEY UPDATE cancel = cancel OR %(cancel)s;

-- name: get_pause
SELECT scope, paused_at, paused_by, cancel FROM tenure_pauses WHERE scope = %(scope)s;

-- name: lock_pause
-- get_pause, locking the row until the transaction ends.
SELECT scope, paused_at, paused_by, cancel FROM tenure_pauses WHERE scope = %(scope)s FOR UPDATE;

-- name: list_pauses
SELECT scope, paused_at, paused_by, cancel FROM tenure_pauses ORDER BY scope;

-- name: delete_pause
DELETE FROM tenure_pauses WHERE scope = %(scope)s;

-- name: liveness_session
-- The liveness and wait connections live as long as the worker: the server must not end
-- them for idling.
SET SESSION wait_timeout = 31536000;

-- name: liveness_take
-- A worker's liveness lock (tenure.store.liveness): 1 taken, 0 held by another session.
SELECT GET_LOCK(%(name)s, 0), CONNECTION_ID();

-- name: liveness_mine
-- Does this session hold the lock it took a statement ago? Not behind a proxy that
-- multiplexes sessions, where this statement may run in another server session.
SELECT COALESCE(IS_USED_LOCK(%(name)s) = CONNECTION_ID(), 0);

-- name: liveness_unlock
SELECT RELEASE_LOCK(%(name)s);

-- name: liveness_holder
SELECT IS_USED_LOCK(%(name)s);

-- name: liveness_wait
-- The wait (tenure.store.mysql, "Wake-ups") of a worker's wait connection: unless the
-- wake counter moved since the last wait saw it (%(seen)s; NULL the first time), wait
-- for %(wait)s seconds for the lock %(target)s: the liveness lock of the worker this one
-- watches (tenure.store.liveness, watching), or while it watches none its own, held by
-- its liveness session. 0 when the wait ran out (the lock is held), NULL when woken (KILL
-- QUERY; or error 1317), 1 if the lock was free (that worker, or this worker's liveness
-- session, is gone). Then check that the worker's own lock %(name)s is held by its
-- liveness session (1): the wait is the liveness probe too. A lock this wait took is let
-- go at once, so that the others find its worker dead; and first, any lock a wait
-- interrupted between its GET_LOCK and its RELEASE_LOCK left held (this connection holds
-- none otherwise), in the derived table, which is read before the wait. (GET_LOCK, not
-- SLEEP: every SLEEP waits on one server-wide mutex, which a KILL spins on for up to 2 s
-- when several sleepers are killed at once, measured on MariaDB 10.11.) The alias marks
-- the statement for wake_targets.
SELECT IF(c.v = %(seen)s, GET_LOCK(%(target)s, %(wait)s), 2) AS tenure_wait, c.v,
       COALESCE(IS_USED_LOCK(%(name)s) = %(holder)s, 0),
       IF(IS_USED_LOCK(%(target)s) = CONNECTION_ID(), RELEASE_LOCK(%(target)s), 0)
FROM (SELECT COALESCE(MAX(value), 0) AS v, RELEASE_ALL_LOCKS() AS r
      FROM tenure_counters WHERE name = 'wakes') AS c;

-- name: listen_wait
-- The same wait for a listener that holds no liveness lock (listen() outside a worker).
SELECT IF(c.v = %(seen)s, SLEEP(%(wait)s), 2) AS tenure_wait, c.v
FROM (SELECT COALESCE(MAX(value), 0) AS v FROM tenure_counters WHERE name = 'wakes') AS c;

-- name: wake_bump
-- Moves the wake counter, in a transaction that frees or changes tasks (the row is made
-- by the first one): a wait that starts after it returns at once, so that no wake-up is
-- lost between two waits.
INSERT INTO tenure_counters (name, value) VALUES ('wakes', 1) ON DUPLICATE KEY UPDATE value = value + 1;

-- name: wake_targets
-- The sessions inside a wait of this database now: connections that run nothing but
-- waits, so KILL QUERY of one can only end a wait. From the moment the server has read
-- the statement (INFO), not only once it sleeps: a wait still starting is ended before
-- its sleep, rather than missed. Without the PROCESS privilege a user sees its own
-- sessions only: those it may KILL.
SELECT ID FROM information_schema.PROCESSLIST
WHERE DB = DATABASE() AND ID <> CONNECTION_ID()
  AND LEFT(INFO, 10) = 'SELECT IF(' AND LOCATE(') AS tenure_wait', INFO) > 0;

-- name: wake
KILL QUERY %(id)s;
