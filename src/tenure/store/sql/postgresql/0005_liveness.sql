-- tenure schema version 5 (PostgreSQL): session-bound liveness.
--
-- A worker's row records the key of the session-level advisory lock it holds for as long
-- as it lives (NULL: it holds none, and its lease alone decides). A worker whose lock is
-- free is dead: claims end its lease at once (see tenure.store.liveness).
ALTER TABLE tenure_workers ADD COLUMN IF NOT EXISTS liveness bigint;
