-- The store's write (migration 0010's ``ocitag_store_write``: the same statement, the
-- same guard, the same results) taking each kind of row as ONE array of a composite type:
-- the tags (``ocitag_store_tag_in``), the idempotency records (``ocitag_store_record_in``)
-- and the history entries (``ocitag_store_entry_in``), instead of one array per column
-- (15 + 11 + 8 of them). The names stay two arrays (few a batch once the worker knows
-- them).
--
-- Why: the client's CPU. asyncpg checks every element of every array parameter
-- (``isinstance`` against three abstract base classes, a Python call each) before it
-- encodes it, and a drain's write sends about thirty elements per event; a composite
-- element is checked once for all its fields, which are then encoded as an array's
-- elements are. Measured one-off (1,000 records a statement, interleaved, on the shared
-- stack): the client's CPU per record 7.3 -> 4.0 us, PostgreSQL's 13.3 -> 12.5 us
-- (docs/scaling.md, "What each change bought"). It does not move work to the server,
-- as JSON parameters did: the server reads a composite's fields in binary, as it reads
-- an array's elements.
--
-- The function of the old arguments (0010's) is kept beside it: a worker of the previous
-- release still running while this migration is applied goes on writing through it until
-- it is replaced (the tables are unchanged, so its writes are the same). One started
-- after it refuses this schema version, as always.

CREATE TYPE ocitag_store_tag_in AS (
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
    deleted_by        text,
    -- the key (time, source, id) the decision was made against; NULL: a new row
    expected_on       timestamptz,
    expected_source   text,
    expected_id       text
);

CREATE TYPE ocitag_store_record_in AS (
    key         bytea,
    fingerprint bytea,
    status      smallint,
    change      smallint,
    version     bigint,
    created_on  timestamptz,
    created_by  text,
    source_ref  smallint,
    outcome_key bytea,
    outcome     bytea,
    superseded  bytea
);

CREATE TYPE ocitag_store_entry_in AS (
    at         timestamptz,
    tag_ref    bigint,
    by_ref     bigint,
    source_ref bigint,
    version    integer,
    change     smallint,
    artifact   bytea,
    event_id   bytea
);


-- $1 the tags, $2 the time, $3 the epoch, $4 the records, $5 and $6 the new names' refs
-- and names, $7 the history entries

CREATE FUNCTION ocitag_store_write(
    ocitag_store_tag_in[], timestamptz, integer, ocitag_store_record_in[], bigint[], text[],
    ocitag_store_entry_in[])
RETURNS TABLE (written ocitag_store_key[], recorded bigint)
LANGUAGE plpgsql VOLATILE
SET plan_cache_mode = force_generic_plan
SET enable_seqscan = off SET enable_hashjoin = off SET enable_mergejoin = off
SET enable_memoize = off SET jit = off AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY
    WITH u AS (
        SELECT * FROM unnest($1) AS u
    ), upd AS (
        UPDATE ocitags t
        SET artifact = u.artifact, created_by = u.created_by, created_on = u.created_on,
            last_modified_by = u.last_modified_by, last_modified_on = u.last_modified_on,
            version = u.version, last_event_source = u.last_event_source,
            last_event_id = u.last_event_id, deleted_on = u.deleted_on,
            deleted_by = u.deleted_by,
            recorded_at = CASE WHEN u.deleted_on IS NULL THEN t.recorded_at ELSE $2 END
        FROM u CROSS JOIN LATERAL (
            SELECT x.ctid AS version_at FROM ocitags x
            WHERE x.repository = u.repository AND x.tag = u.tag
            LIMIT 1
        ) AS found
        WHERE u.expected_id IS NOT NULL AND t.ctid = found.version_at
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
               u.last_event_id, u.deleted_on, u.deleted_by, $2
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
        SELECT x.r, x.n FROM unnest($5, $6) AS x(r, n)
        WHERE (SELECT g.ok FROM guarded g)
        ORDER BY x.r
        ON CONFLICT (ref) DO NOTHING
    ), history AS (
        INSERT INTO ocitag_history (at, recorded_at, tag_ref, by_ref, source_ref, version,
                                    epoch, change, artifact, event_id)
        SELECT h.at, $2, h.tag_ref, h.by_ref, h.source_ref, h.version, $3, h.change,
               h.artifact, h.event_id
        FROM unnest($7) AS h
        WHERE (SELECT g.ok FROM guarded g)
    ), recorded AS (
        INSERT INTO processed_events AS e (key, epoch, fingerprint, processed_at, status,
                                           change, version, created_on, created_by,
                                           source_ref, outcome_key, outcome, superseded)
        SELECT p.key, $3, p.fingerprint, $2, p.status, p.change, p.version, p.created_on,
               p.created_by, p.source_ref, p.outcome_key, p.outcome, p.superseded
        FROM unnest($4) AS p
        WHERE (SELECT g.ok FROM guarded g)
        ORDER BY p.key
        ON CONFLICT (key, epoch) DO NOTHING
        RETURNING e.key
    )
    SELECT ARRAY(SELECT ROW(w.repository, w.tag)::ocitag_store_key FROM written w),
           (SELECT count(*) FROM recorded);
END $$;
