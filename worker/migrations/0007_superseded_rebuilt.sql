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
-- (their rebuilt outcomes, 200s, carry none).
ALTER TABLE outcome_sources ADD COLUMN problem_base text;
ALTER TABLE outcome_sources DROP CONSTRAINT outcome_sources_source_key;
ALTER TABLE outcome_sources ADD CONSTRAINT outcome_sources_source_problem_base_key
    UNIQUE NULLS NOT DISTINCT (source, problem_base);

-- Nullable, at the end: no rewrite; a row without them pays no byte (the null bitmap
-- of 18 columns still fits the 8-byte-aligned header).
ALTER TABLE processed_events
    ADD COLUMN superseded_on       timestamptz,  -- the newer row's key: time,
    ADD COLUMN superseded_live     boolean,      -- (moved; false: deleted)
    ADD COLUMN superseded_binary   boolean,      -- the first delivery's content mode
    ADD COLUMN superseded_source   text,         -- source,
    ADD COLUMN superseded_id       text,         -- and id
    ADD COLUMN superseded_instance text;         -- the first delivery's record (urn:kafka:…)

-- An outcome is kept one way: its bytes, a rebuilt 200 (change) or a rebuilt 409.
ALTER TABLE processed_events DROP CONSTRAINT processed_events_v2_check;
ALTER TABLE processed_events ADD CONSTRAINT processed_events_kept_one_way
    CHECK (num_nonnulls(outcome, change, superseded_id) = 1);
ALTER TABLE processed_events ADD CONSTRAINT processed_events_superseded_whole
    CHECK (num_nulls(superseded_on, superseded_live, superseded_binary, superseded_source,
                     superseded_id, superseded_instance) IN (0, 6));
