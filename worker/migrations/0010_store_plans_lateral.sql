-- The store's lookup and write (migration 0009's functions, same arguments and results)
-- with each tag of the batch read by a probe of the tags' primary key, whatever the tag
-- table held when the session's plan was made.
--
-- 0009 joined the batch's keys to the tag table (``JOIN unnest(...) ON t.repository = u.r
-- AND t.tag = u.g`` in the lookup, ``UPDATE ocitags t ... FROM u WHERE t.repository =
-- u.repository AND t.tag = u.tag`` in the write) and left the join's order to the
-- planner. Its pins price a sequential scan out, but not a walk of the whole primary-key
-- index, which a join on the key's columns offers as an ordered input. A generic plan made
-- while the table held about one row, and had been analysed so (a fresh store after an
-- autovacuum or the worker's first analyse), put the table outside: one walk of the whole
-- index per batch, every key of the batch compared with every row, in the lookup and in
-- the write. The plan is kept until the next analyse of the table, while the store grows
-- fast from empty: at 10,000 tags a batch of one tag read all 10,000 entries of the index
-- in the lookup and all of them again in the write (tests/integration/test_plans.py, whose
-- control puts 0009's version of each function back).
--
-- Here the tag table is not joined to the keys: each key's row is a LATERAL subquery of
-- its own, ``WHERE t.repository = k.repository AND t.tag = k.tag LIMIT 1``, whose only
-- paths are a probe of the primary key with that key (or a disabled scan). The write's
-- UPDATE finds the row to update the same way, as its ``ctid`` (the row version the
-- statement's snapshot sees), and reaches it by that ``ctid`` alone: the UPDATE's
-- target has then no join clause on the key's columns, hence no index walk to choose.
-- Its guard is unchanged (the row's key must still be the one the decision was made
-- against). A row updated or deleted by another transaction after the snapshot is
-- rechecked by PostgreSQL as before, on its newest version: every write sets a greater
-- key and pruning deletes only tombstones, so such a row fails the guard and is read and
-- decided again, as it was with the join. The key (repository, tag) is never updated.
--
-- A memo of the probes (Memoize) is switched off too: the batch's keys are distinct
-- (worker/store.py), so it would never be hit.
--
-- Corrected from 0009's comment: the one-row ``processed_current`` is not read through
-- its primary key (the key is the ``singleton`` column, which the statement does not
-- test): it is read by a sequential scan, the only way to read it, which
-- ``enable_seqscan = off`` does not forbid but prices at 10^10. One page, one row: the
-- scan costs nothing worth counting; the price is what made 0009 switch JIT off.

CREATE OR REPLACE FUNCTION ocitag_store_lookup(bytea[], text[], text[])
RETURNS TABLE (epoch integer, seen integer, processed ocitag_store_processed[],
               tags ocitag_store_tag[])
LANGUAGE plpgsql VOLATILE
SET plan_cache_mode = force_generic_plan
SET enable_seqscan = off SET enable_hashjoin = off SET enable_mergejoin = off
SET enable_memoize = off SET jit = off AS $$
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
               SELECT found.tag_row
               FROM unnest($2, $3) AS k(repository, tag)
               CROSS JOIN LATERAL (
                   SELECT ROW(t.repository, t.tag, t.artifact, t.created_by, t.created_on,
                              t.last_modified_by, t.last_modified_on, t.version,
                              t.last_event_source, t.last_event_id, t.deleted_on,
                              t.deleted_by)::ocitag_store_tag AS tag_row
                   FROM ocitags t
                   WHERE t.repository = k.repository AND t.tag = k.tag
                   LIMIT 1
               ) AS found
           );
END $$;

CREATE OR REPLACE FUNCTION ocitag_store_write(
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
SET enable_seqscan = off SET enable_hashjoin = off SET enable_mergejoin = off
SET enable_memoize = off SET jit = off AS $$
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
