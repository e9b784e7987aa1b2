-- tenure schema version 1 (PostgreSQL). Times are double precision seconds since the
-- Unix epoch on the database's clock (clock_timestamp(), never now()).

-- Terms for every task come from this sequence: never reused, even after a task is
-- removed and created again.
CREATE SEQUENCE tenure_term_seq;

CREATE TABLE tenure_counters (
    name  text PRIMARY KEY,
    value bigint NOT NULL
);
-- Grows on every admin change to tasks, so workers notice changes with one cheap read.
INSERT INTO tenure_counters (name, value) VALUES ('changes', 0);

CREATE TABLE tenure_kinds (
    kind       text PRIMARY KEY,
    every      double precision,
    cron       text,
    timeout    double precision,
    updated_at double precision NOT NULL
);

CREATE TABLE tenure_workers (
    id           text PRIMARY KEY,
    host         text NOT NULL,
    pid          integer NOT NULL,
    started_at   double precision NOT NULL,
    heartbeat_at double precision NOT NULL,
    expires_at   double precision NOT NULL,
    draining     boolean NOT NULL DEFAULT false
);

CREATE TABLE tenure_tasks (
    kind       text NOT NULL,
    key        text NOT NULL,
    every      double precision,
    cron       text,
    params     text NOT NULL,
    enabled    boolean NOT NULL,
    owner      text,
    term       bigint NOT NULL DEFAULT 0,
    last_slot  double precision,
    freed_at   double precision,
    freed_how  text NOT NULL DEFAULT 'new',
    trigger_at double precision,
    version    bigint NOT NULL DEFAULT 1,
    created_at double precision NOT NULL,
    updated_at double precision NOT NULL,
    PRIMARY KEY (kind, key),
    CHECK ((every IS NULL) <> (cron IS NULL))
);
CREATE INDEX tenure_tasks_owner ON tenure_tasks (owner);

CREATE TABLE tenure_runs (
    id           bigserial PRIMARY KEY,
    kind         text NOT NULL,
    key          text NOT NULL,
    worker       text NOT NULL,
    term         bigint NOT NULL,
    scheduled_at double precision NOT NULL,
    started_at   double precision NOT NULL,
    ended_at     double precision NOT NULL,
    outcome      text NOT NULL,
    error        text
);
CREATE INDEX tenure_runs_task ON tenure_runs (kind, key, id);
CREATE INDEX tenure_runs_ended ON tenure_runs (ended_at);
