-- tenure schema version 2 (MySQL 8.0.17+ / MariaDB 10.6+): the fence as a statement
-- that fails.
--
-- CALL tenure_fence(kind, key, worker, term, slot) locks the task row if `worker` owns it
-- at `term` with a live lease (on the server's clock at evaluation, {now}), and records
-- `slot` (when not NULL) as the task's last slot, never moving it back. If the fence does
-- not hold it signals an error ('tenure: fence does not hold'), which stops a batch of
-- statements sent as one text: a COMMIT sent right behind it never runs. That is what lets
-- a fenced transaction send its final check and its COMMIT together, in one round trip.
--
-- Creating a procedure needs the CREATE ROUTINE privilege (`tenure migrate` only);
-- workers need EXECUTE on it, which its creator has.
--
-- Statements here end with a `;` at the end of a line, except between DELIMITER lines
-- (the mysql client's convention), where they end with `//`. Safe to run again.

DROP PROCEDURE IF EXISTS tenure_fence;

DELIMITER //
CREATE PROCEDURE tenure_fence(
    IN p_kind VARCHAR(64) CHARACTER SET utf8mb4 COLLATE {collation},
    IN p_key VARCHAR(200) CHARACTER SET utf8mb4 COLLATE {collation},
    IN p_worker VARCHAR(200) CHARACTER SET utf8mb4 COLLATE {collation},
    IN p_term BIGINT,
    IN p_slot DOUBLE
)
MODIFIES SQL DATA
BEGIN
    DECLARE held INT;
    -- Liveness of the owner is a subquery, whose rows InnoDB does not lock.
    SELECT COUNT(*) INTO held FROM tenure_tasks t FORCE INDEX (tenure_tasks_task)
    WHERE t.kind = p_kind AND t.`key` = p_key AND t.owner = p_worker AND t.term = p_term
      AND EXISTS (SELECT 1 FROM tenure_workers w WHERE w.id = t.owner AND w.expires_at > {now})
    FOR UPDATE;
    IF held = 0 THEN
        SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'tenure: fence does not hold';
    END IF;
    IF p_slot IS NOT NULL THEN
        UPDATE tenure_tasks t FORCE INDEX (tenure_tasks_task)
        SET t.last_slot = GREATEST(COALESCE(t.last_slot, p_slot), p_slot)
        WHERE t.kind = p_kind AND t.`key` = p_key;
    END IF;
END //
DELIMITER ;
