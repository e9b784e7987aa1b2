-- tenure schema version 3 (PostgreSQL): pauses. A row pauses one kind, or every kind
-- when `scope` is '*' (no kind can be spelled so). Workers start no run of paused work;
-- its tasks keep their owners and schedules. `cancel`: runs in progress are cancelled too.
CREATE TABLE tenure_pauses (
    scope     text PRIMARY KEY,
    paused_at double precision NOT NULL,
    paused_by text NOT NULL,
    cancel    boolean NOT NULL DEFAULT false
);
