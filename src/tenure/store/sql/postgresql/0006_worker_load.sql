-- tenure schema version 6 (PostgreSQL): each worker's load, published with its lease
-- renewal (in the renewal's own statement), so that `tenure status`, `workers list` and
-- the dashboard can say that a worker is over capacity: the due runs waiting for a place
-- under its cap, how long the oldest had waited (seconds), and the cap. NULL: nothing
-- published yet (a worker that has just joined, or of an earlier release).
ALTER TABLE tenure_workers
    ADD COLUMN IF NOT EXISTS runs_waiting integer,
    ADD COLUMN IF NOT EXISTS oldest_waiting double precision,
    ADD COLUMN IF NOT EXISTS concurrency integer;
