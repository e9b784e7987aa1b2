-- tenure schema version 3 (MySQL 8.0.17+ / MariaDB 10.6+): pauses. A row pauses one
-- kind, or every kind when `scope` is '*' (no kind can be spelled so). Workers start no
-- run of paused work; its tasks keep their owners and schedules. `cancel`: runs in
-- progress are cancelled too.
CREATE TABLE IF NOT EXISTS tenure_pauses (
    scope     VARCHAR(64) NOT NULL,
    paused_at DOUBLE NOT NULL,
    paused_by VARCHAR(255) NOT NULL,
    cancel    BOOLEAN NOT NULL DEFAULT FALSE,
    PRIMARY KEY (scope)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE={collation};
