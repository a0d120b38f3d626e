-- The store's two statements per batch (worker/store.py: the lookup and the write) planned
-- once per session instead of at every execution, and pinned onto the indexes.
--
-- The worker's pools plan every statement for its parameters (plan_cache_mode =
-- force_custom_plan, worker/db.py): a generic plan cached while the tables were empty
-- had been a sequential scan for ever (docs/scaling.md, "Plans"). Its price was planning
-- both statements at every batch over every partition of the idempotency record and of
-- the history: at batches of ten, ~0.3 ms for the lookup (growing with the record's
-- partitions: ~0.7 ms at 20) and ~0.5 ms for the write, a third of PostgreSQL's CPU per
-- batch. In these functions each statement is planned once per session, for any
-- parameters (a generic plan, kept by PL/pgSQL; an analyse of a table or a partition
-- attached or dropped plans it again), and the SET clause holds for the functions' own
-- statements only.
--
-- A generic plan made while a table is small (a fresh store, a new partition) must not
-- stay a scan as the table grows. So the functions plan without sequential scans, hash
-- joins or merge joins: every table is read through the index that serves the
-- statement's keys (the record's primary key by ``key = ANY``, the tags' primary key
-- probed once per key of the batch in a nested loop), whatever the tables' sizes or
-- statistics when the plan was made (tests/integration/test_plans.py holds it, and fails
-- with these settings removed). The one-row ``processed_current`` is read through its
-- primary key then, at no cost worth counting. A scan so disabled still costs 10^10 in the
-- planner's units, which would have every call compiled by JIT (~250 ms): jit is off.
--
-- The statements are the store's, unchanged (the comments in worker/store.py explain
-- them); the lookup's arrays of anonymous records become arrays of the types below (a
-- PL/pgSQL function cannot return record[]), field for field as before.

CREATE TYPE ocitag_store_processed AS (
    key          bytea,
    fingerprint  bytea,
    processed_at timestamptz,
    status       smallint,
    change       smallint,
    version      bigint,
    created_on   timestamptz,
    created_by   text,
    source_ref   smallint,
    outcome_key  bytea,
    outcome      bytea,
    superseded   bytea
);

CREATE TYPE ocitag_store_tag AS (
    repository        text,
    tag               text,
    artifact          text,
    created_by        text,
    created_on        timestamptz,
    last_modified_by  text,
    last_modified_on  timestamptz,
    version           bigint,
    last_event_source text,
    last_event_id     text,
    deleted_on        timestamptz,
    deleted_by        text
);

CREATE TYPE ocitag_store_key AS (repository text, tag text);

CREATE FUNCTION ocitag_store_lookup(bytea[], text[], text[])
RETURNS TABLE (epoch integer, seen integer, processed ocitag_store_processed[],
               tags ocitag_store_tag[])
LANGUAGE plpgsql VOLATILE
SET plan_cache_mode = force_generic_plan
SET enable_seqscan = off SET enable_hashjoin = off SET enable_mergejoin = off SET jit = off AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY
    WITH locked AS (SELECT c.epoch FROM processed_current c FOR SHARE)
    SELECT (SELECT l.epoch FROM locked l),
           (SELECT c.epoch FROM processed_current c),
           ARRAY(
               SELECT ROW(p.key, p.fingerprint, p.processed_at, p.status, p.change, p.version,
                          p.created_on, p.created_by, p.source_ref, p.outcome_key, p.outcome,
                          p.superseded)::ocitag_store_processed
               FROM processed_events p WHERE p.key = ANY($1)
           ),
           ARRAY(
               SELECT ROW(t.repository, t.tag, t.artifact, t.created_by, t.created_on,
                          t.last_modified_by, t.last_modified_on, t.version,
                          t.last_event_source, t.last_event_id, t.deleted_on,
                          t.deleted_by)::ocitag_store_tag
               FROM ocitags t
               JOIN unnest($2, $3) AS u(r, g) ON t.repository = u.r AND t.tag = u.g
           );
END $$;

CREATE FUNCTION ocitag_store_write(
    text[], text[], text[], text[], timestamptz[], text[], timestamptz[], bigint[], text[],
    text[], timestamptz[], text[], timestamptz[], text[], text[],
    timestamptz, integer,
    bytea[], bytea[], smallint[], smallint[], bigint[], timestamptz[], text[], smallint[],
    bytea[], bytea[], bytea[],
    bigint[], text[],
    timestamptz[], bigint[], bigint[], bigint[], integer[], smallint[], bytea[], bytea[])
RETURNS TABLE (written ocitag_store_key[], recorded bigint)
LANGUAGE plpgsql VOLATILE
SET plan_cache_mode = force_generic_plan
SET enable_seqscan = off SET enable_hashjoin = off SET enable_mergejoin = off SET jit = off AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY
    WITH u AS (
        SELECT * FROM unnest($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)
            AS u(repository, tag, artifact, created_by, created_on, last_modified_by,
                 last_modified_on, version, last_event_source, last_event_id, deleted_on,
                 deleted_by, expected_on, expected_source, expected_id)
    ), upd AS (
        UPDATE ocitags t
        SET artifact = u.artifact, created_by = u.created_by, created_on = u.created_on,
            last_modified_by = u.last_modified_by, last_modified_on = u.last_modified_on,
            version = u.version, last_event_source = u.last_event_source,
            last_event_id = u.last_event_id, deleted_on = u.deleted_on,
            deleted_by = u.deleted_by,
            recorded_at = CASE WHEN u.deleted_on IS NULL THEN t.recorded_at ELSE $16 END
        FROM u
        WHERE u.expected_id IS NOT NULL AND t.repository = u.repository AND t.tag = u.tag
          AND t.last_modified_on = u.expected_on AND t.last_event_source = u.expected_source
          AND t.last_event_id = u.expected_id
        RETURNING t.repository, t.tag
    ), ins AS (
        INSERT INTO ocitags AS t (repository, tag, artifact, created_by, created_on,
                                  last_modified_by, last_modified_on, version,
                                  last_event_source, last_event_id, deleted_on, deleted_by,
                                  recorded_at)
        SELECT u.repository, u.tag, u.artifact, u.created_by, u.created_on,
               u.last_modified_by, u.last_modified_on, u.version, u.last_event_source,
               u.last_event_id, u.deleted_on, u.deleted_by, $16
        FROM u WHERE u.expected_id IS NULL
        ORDER BY u.repository, u.tag
        ON CONFLICT (repository, tag) DO NOTHING
        RETURNING t.repository, t.tag
    ), written AS (
        SELECT upd.repository, upd.tag FROM upd
        UNION ALL SELECT ins.repository, ins.tag FROM ins
    ), guarded AS (
        SELECT (SELECT count(*) FROM written) = (SELECT count(*) FROM u) AS ok
    ), names AS (
        INSERT INTO ocitag_history_names AS n (ref, name)
        SELECT x.r, x.n FROM unnest($29, $30) AS x(r, n)
        WHERE (SELECT g.ok FROM guarded g)
        ORDER BY x.r
        ON CONFLICT (ref) DO NOTHING
    ), history AS (
        INSERT INTO ocitag_history (at, recorded_at, tag_ref, by_ref, source_ref, version,
                                    epoch, change, artifact, event_id)
        SELECT h.ha, $16, h.ht, h.hb, h.hs, h.hv, $17, h.hc, h.hx, h.hi
        FROM unnest($31, $32, $33, $34, $35, $36, $37, $38)
            AS h(ha, ht, hb, hs, hv, hc, hx, hi)
        WHERE (SELECT g.ok FROM guarded g)
    ), recorded AS (
        INSERT INTO processed_events AS e (key, epoch, fingerprint, processed_at, status,
                                           change, version, created_on, created_by,
                                           source_ref, outcome_key, outcome, superseded)
        SELECT p.k, $17, p.f, $16, p.st, p.ch, p.v, p.co, p.cb, p.sr, p.ok, p.o, p.s
        FROM unnest($18, $19, $20, $21, $22, $23, $24, $25, $26, $27, $28)
            AS p(k, f, st, ch, v, co, cb, sr, ok, o, s)
        WHERE (SELECT g.ok FROM guarded g)
        ORDER BY p.k
        ON CONFLICT (key, epoch) DO NOTHING
        RETURNING e.key
    )
    SELECT ARRAY(SELECT ROW(w.repository, w.tag)::ocitag_store_key FROM written w),
           (SELECT count(*) FROM recorded);
END $$;
