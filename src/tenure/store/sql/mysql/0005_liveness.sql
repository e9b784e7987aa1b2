-- tenure schema version 5 (MySQL 8.0.17+ / MariaDB 10.6+): session-bound liveness.
--
-- A worker's row records the name of the GET_LOCK lock it holds for as long as it lives
-- (NULL: it holds none, and its lease alone decides). A worker whose lock is free
-- (IS_USED_LOCK is NULL) is dead: claims end its lease at once (see
-- tenure.store.liveness).
--
-- MySQL has no ADD COLUMN IF NOT EXISTS, and DDL commits on its own: a procedure checks
-- first, so that the script can run again after an interrupted migration.

DROP PROCEDURE IF EXISTS tenure_migrate_0005;

DELIMITER //
CREATE PROCEDURE tenure_migrate_0005()
MODIFIES SQL DATA
BEGIN
    IF NOT EXISTS (SELECT 1 FROM information_schema.columns
                   WHERE table_schema = DATABASE() AND table_name = 'tenure_workers'
                     AND column_name = 'liveness') THEN
        ALTER TABLE tenure_workers ADD COLUMN liveness VARCHAR(64) NULL;
    END IF;
END //
DELIMITER ;

CALL tenure_migrate_0005();

DROP PROCEDURE tenure_migrate_0005;
