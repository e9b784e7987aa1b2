-- tenure schema version 2 (PostgreSQL): the fence as a statement that fails.
--
-- tenure_fence(kind, key, worker, term, slot) locks the task row if `worker` owns it at
-- `term` with a live lease (on the server's clock at evaluation), and records `slot`
-- (when not NULL) as the task's last slot, never moving it back. If the fence does not
-- hold, it raises SQLSTATE TN001, which fails the transaction: a COMMIT sent right behind
-- it in the same pipeline then commits nothing. That is what lets a fenced transaction
-- send its final check and its COMMIT together, in one round trip, with no moment
-- between them for a paused or slow client to stretch.
CREATE OR REPLACE FUNCTION tenure_fence(
    p_kind text, p_key text, p_worker text, p_term bigint, p_slot double precision
) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    -- Liveness of the owner is a subquery: when the row changed while this waited for
    -- its lock, PostgreSQL re-checks the WHERE against the new row version, subquery
    -- included (see the claim query).
    PERFORM 1 FROM tenure_tasks t
    WHERE t.kind = p_kind AND t.key = p_key AND t.owner = p_worker AND t.term = p_term
      AND EXISTS (SELECT 1 FROM tenure_workers w
                  WHERE w.id = t.owner
                    AND w.expires_at > extract(epoch from clock_timestamp())::double precision)
    FOR UPDATE OF t;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'tenure: the fence of %/% at term % does not hold for worker %',
            p_kind, p_key, p_term, p_worker
            USING ERRCODE = 'TN001';
    END IF;
    IF p_slot IS NOT NULL THEN
        UPDATE tenure_tasks SET last_slot = greatest(coalesce(last_slot, p_slot), p_slot)
        WHERE kind = p_kind AND key = p_key;
    END IF;
END
$$;
