-- A superseded event's 409 rebuilt from a few stored fields instead of kept as its bytes
-- (issue "Close to the floor"): on a backlog of random event times most late events are
-- superseded, and their outcome kept whole made the record ~673 B per row against ~160 B
-- for a rebuilt 200.
--
-- The 409 is rebuilt with the repeat (the same fingerprint: the same repository, tag,
-- time, source and id) from: the key (time, source, id) of the row that was newer and
-- whether it was live (moved) or a tombstone (deleted), the first delivery's content
-- mode (the problem's locations: headers or body) and its record (the problem's
-- ``instance``), and, through ``source_ref``, the worker source and problem base URI it
-- was published under (worker/outcomes.py, ``processed_row`` and ``replayed``).

-- A rebuilt outcome keeps the problem base URI of its first publication too: a source
-- row is now a (worker source, problem base) pair; the rows of before have no base
-- (their rebuilt outcomes, 200s, carry none), one per source as the old key made them,
-- and new rows always have one: a plain unique key (PostgreSQL 14 has no NULLS NOT
-- DISTINCT) is enough for the worker's ON CONFLICT (source, problem_base).
ALTER TABLE outcome_sources ADD COLUMN problem_base text;
ALTER TABLE outcome_sources DROP CONSTRAINT outcome_sources_source_key;
ALTER TABLE outcome_sources ADD CONSTRAINT outcome_sources_source_problem_base_key
    UNIQUE (source, problem_base);

-- One nullable column at the end (no rewrite; a row without it pays no byte): the
-- newer key, its state, the first delivery's content mode and record, encoded by
-- worker/plan.py (``Superseded.to_bytes``). One column, not six: a partition never
-- analysed (the next one, empty until the rotation) is costed by the planner from its
-- columns' default widths, and six more tipped its lookup from the primary key to a
-- sequential scan (tests/integration/test_plans.py); one bytea column does not.
ALTER TABLE processed_events ADD COLUMN superseded bytea;

-- An outcome is kept one way: its bytes, a rebuilt 200 (change) or a rebuilt 409.
ALTER TABLE processed_events DROP CONSTRAINT processed_events_v2_check;
ALTER TABLE processed_events ADD CONSTRAINT processed_events_kept_one_way
    CHECK (num_nonnulls(outcome, change, superseded) = 1);
