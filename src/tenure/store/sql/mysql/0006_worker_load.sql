-- tenure schema version 6 (MySQL 8.0.17+ / MariaDB 10.6+): each worker's load, published
-- with its lease renewal (in the renewal's own statement), so that `tenure status`,
-- `workers list` and the dashboard can say that a worker is over capacity: the due runs
-- waiting for a place under its cap, how long the oldest had waited (seconds), and the
-- cap. NULL: nothing published yet (a worker that has just joined, or of an earlier
-- release).
--
-- MySQL has no ADD COLUMN IF NOT EXISTS, and DDL commits on its own: a procedure checks
-- first, so that the script can run again after an interrupted migration.

DROP PROCEDURE IF EXISTS tenure_migrate_0006;

DELIMITER //
CREATE PROCEDURE tenure_migrate_0006()
MODIFIES SQL DATA
BEGIN
    IF NOT EXISTS (SELECT 1 FROM information_schema.columns
                   WHERE table_schema = DATABASE() AND table_name = 'tenure_workers'
                     AND column_name = 'runs_waiting') THEN
        ALTER TABLE tenure_workers ADD COLUMN runs_waiting INT NULL;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM information_schema.columns
                   WHERE table_schema = DATABASE() AND table_name = 'tenure_workers'
                     AND column_name = 'oldest_waiting') THEN
        ALTER TABLE tenure_workers ADD COLUMN oldest_waiting DOUBLE NULL;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM information_schema.columns
                   WHERE table_schema = DATABASE() AND table_name = 'tenure_workers'
                     AND column_name = 'concurrency') THEN
        ALTER TABLE tenure_workers ADD COLUMN concurrency INT NULL;
    END IF;
END //
DELIMITER ;

CALL tenure_migrate_0006();

DROP PROCEDURE tenure_migrate_0006;
