-- tenure schema version 3 (SQLite): pauses. A row pauses one kind, or every kind when
-- `scope` is '*' (no kind can be spelled so). Workers start no run of paused work; its
-- tasks keep their owners and schedules. `cancel`: runs in progress are cancelled too.
CREATE TABLE tenure_pauses (
    scope     TEXT PRIMARY KEY,
    paused_at REAL NOT NULL,
    paused_by TEXT NOT NULL,
    cancel    INTEGER NOT NULL DEFAULT 0
);
