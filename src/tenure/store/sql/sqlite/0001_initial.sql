-- tenure schema version 1 (SQLite). Times are REAL seconds since the Unix epoch on the
-- database's clock; ids and names are TEXT compared byte for byte.

CREATE TABLE tenure_counters (
    name  TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
-- Terms for every task come from this one counter, so a term is never reused, even
-- after a task is removed and created again.
INSERT INTO tenure_counters (name, value) VALUES ('term', 0);
-- Grows on every admin change to tasks, so workers notice changes with one cheap read.
INSERT INTO tenure_counters (name, value) VALUES ('changes', 0);

CREATE TABLE tenure_kinds (
    kind       TEXT PRIMARY KEY,
    every      REAL,
    cron       TEXT,
    timeout    REAL,
    updated_at REAL NOT NULL
);

CREATE TABLE tenure_workers (
    id           TEXT PRIMARY KEY,
    host         TEXT NOT NULL,
    pid          INTEGER NOT NULL,
    started_at   REAL NOT NULL,
    heartbeat_at REAL NOT NULL,
    expires_at   REAL NOT NULL,
    draining     INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE tenure_tasks (
    kind       TEXT NOT NULL,
    key        TEXT NOT NULL,
    every      REAL,
    cron       TEXT,
    params     TEXT NOT NULL,
    enabled    INTEGER NOT NULL,
    owner      TEXT,
    term       INTEGER NOT NULL DEFAULT 0,
    last_slot  REAL,
    freed_at   REAL,
    freed_how  TEXT NOT NULL DEFAULT 'new',
    trigger_at REAL,
    version    INTEGER NOT NULL DEFAULT 1,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    PRIMARY KEY (kind, key),
    CHECK ((every IS NULL) <> (cron IS NULL))
);
CREATE INDEX tenure_tasks_owner ON tenure_tasks (owner);

CREATE TABLE tenure_runs (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    kind         TEXT NOT NULL,
    key          TEXT NOT NULL,
    worker       TEXT NOT NULL,
    term         INTEGER NOT NULL,
    scheduled_at REAL NOT NULL,
    started_at   REAL NOT NULL,
    ended_at     REAL NOT NULL,
    outcome      TEXT NOT NULL,
    error        TEXT
);
CREATE INDEX tenure_runs_task ON tenure_runs (kind, key, id);
CREATE INDEX tenure_runs_ended ON tenure_runs (ended_at);
