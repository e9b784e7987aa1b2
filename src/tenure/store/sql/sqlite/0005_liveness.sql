-- tenure schema version 5 (SQLite): session-bound liveness.
--
-- A worker's row records the path of the lock file it holds (flock) for as long as it
-- lives (NULL: it holds none, and its lease alone decides). A worker whose file is free
-- is dead: claims end its lease at once (see tenure.store.liveness).
ALTER TABLE tenure_workers ADD COLUMN liveness TEXT;
