-- tenure schema version 1 (MySQL 8.0.17+ / MariaDB 10.6+).
--
-- Times are DOUBLE seconds since the Unix epoch on the database's clock (never
-- TIMESTAMP, which ends in 2038). Names, keys and worker ids use a binary NO PAD
-- collation ({collation}: utf8mb4_0900_bin on MySQL, utf8mb4_nopad_bin on MariaDB), so
-- they compare byte for byte like on the other stores: 'Paris' <> 'paris' <> 'pàris',
-- and 'w1' <> 'w1 '. `key` is a reserved word and is always quoted.
--
-- DDL commits on its own in MySQL, so every statement here may be run again after a
-- migration that stopped half-way (IF NOT EXISTS, INSERT IGNORE).

-- Terms for every task come from the 'term' row, taken with
-- UPDATE … SET value = LAST_INSERT_ID(value + n): never reused, even after a task is
-- removed and created again. 'changes' grows on every admin change to tasks, so
-- workers notice changes with one cheap read.
CREATE TABLE IF NOT EXISTS tenure_counters (
    name  VARCHAR(32) NOT NULL,
    value BIGINT NOT NULL,
    PRIMARY KEY (name)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE={collation};
INSERT IGNORE INTO tenure_counters (name, value) VALUES ('term', 0), ('changes', 0);

CREATE TABLE IF NOT EXISTS tenure_kinds (
    kind       VARCHAR(64) NOT NULL,
    every      DOUBLE,
    cron       VARCHAR(255),
    timeout    DOUBLE,
    updated_at DOUBLE NOT NULL,
    PRIMARY KEY (kind)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE={collation};

CREATE TABLE IF NOT EXISTS tenure_workers (
    id           VARCHAR(200) NOT NULL,
    host         VARCHAR(255) NOT NULL,
    pid          BIGINT NOT NULL,
    started_at   DOUBLE NOT NULL,
    heartbeat_at DOUBLE NOT NULL,
    expires_at   DOUBLE NOT NULL,
    draining     BOOLEAN NOT NULL DEFAULT FALSE,
    PRIMARY KEY (id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE={collation};

-- Tasks are found by (kind, key), a unique key; the primary key is a short surrogate
-- because an UPDATE joined to a JSON_TABLE (claims, slots) buffers the primary keys of
-- the rows it changes in a temporary table, which stays in memory only for short keys
-- (kind and key are up to 1060 bytes: that would be an on-disk table per statement).
CREATE TABLE IF NOT EXISTS tenure_tasks (
    id         BIGINT NOT NULL AUTO_INCREMENT,
    kind       VARCHAR(64) NOT NULL,
    `key`      VARCHAR(200) NOT NULL,
    every      DOUBLE,
    cron       VARCHAR(255),
    params     LONGTEXT NOT NULL,
    enabled    BOOLEAN NOT NULL,
    owner      VARCHAR(200),
    term       BIGINT NOT NULL DEFAULT 0,
    last_slot  DOUBLE,
    freed_at   DOUBLE,
    freed_how  VARCHAR(16) NOT NULL DEFAULT 'new',
    trigger_at DOUBLE,
    version    BIGINT NOT NULL DEFAULT 1,
    created_at DOUBLE NOT NULL,
    updated_at DOUBLE NOT NULL,
    PRIMARY KEY (id),
    UNIQUE KEY tenure_tasks_task (kind, `key`),
    KEY tenure_tasks_owner (owner),
    CONSTRAINT tenure_tasks_one_schedule CHECK ((every IS NULL) <> (cron IS NULL))
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE={collation};

CREATE TABLE IF NOT EXISTS tenure_runs (
    id           BIGINT NOT NULL AUTO_INCREMENT,
    kind         VARCHAR(64) NOT NULL,
    `key`        VARCHAR(200) NOT NULL,
    worker       VARCHAR(200) NOT NULL,
    term         BIGINT NOT NULL,
    scheduled_at DOUBLE NOT NULL,
    started_at   DOUBLE NOT NULL,
    ended_at     DOUBLE NOT NULL,
    outcome      VARCHAR(16) NOT NULL,
    error        MEDIUMTEXT,
    PRIMARY KEY (id),
    KEY tenure_runs_task (kind, `key`, id),
    KEY tenure_runs_ended (ended_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE={collation};
