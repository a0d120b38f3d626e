-- A smaller history entry (issue 22, "What it costs" in docs/history.md): the same fields,
-- fewer bytes per applied change.
--
-- - ``version`` an integer (4 bytes; two thousand million changes of one tag);
-- - ``change`` also carries the ``repointed`` flag: the change's code (0 baseline,
--   1 created, 2 updated, 3 unchanged, 4 deleted) plus 8 when re-pointed (one smallint
--   instead of a smallint and a boolean);
-- - ``event_id`` as bytes: an id in the canonical (lowercase, hyphenated) UUID form as
--   its 16 raw bytes, any other as its UTF-8, preceded by one zero byte when that is
--   16 bytes long (a text id never holds a zero byte), so that 16 bytes always mean a
--   UUID (worker/history.py ``event_id_bytes``);
-- - the two indexes by tag on ``(tag_ref, at)``: a tag's entries of one instant are few
--   (ties of time), so ordering them by version is a sort of those few, not an index
--   column in every entry (8 bytes each).
--
-- The table is rebuilt rather than altered: a dropped column is stored as a null in
-- every new row, and a row with a null has a null bitmap (here 8 more bytes a row).
-- The existing entries are copied, converted, into partitions of the same names.

ALTER TABLE ocitag_history RENAME TO ocitag_history_0005;

CREATE TABLE ocitag_history (
    at          timestamptz NOT NULL,   -- the event's time
    recorded_at timestamptz NOT NULL,   -- when the worker applied it
    tag_ref     bigint      NOT NULL,   -- the OCITag ID
    by_ref      bigint      NOT NULL,   -- last_modified_by after a move, deleted_by
    source_ref  bigint      NOT NULL,   -- the event's source
    version     integer     NOT NULL,
    epoch       integer     NOT NULL,
    change      smallint    NOT NULL,   -- code (0-4) + 8 when repointed
    artifact    bytea       NOT NULL,   -- raw digest; a deletion's: what it pointed at
    event_id    bytea       NOT NULL    -- worker/history.py event_id_bytes
) PARTITION BY LIST (epoch);

DO $$
DECLARE e integer;
BEGIN
    FOR e IN SELECT substring(c.relname FROM 'ocitag_history_e(\d+)$')::integer
             FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
             WHERE i.inhparent = 'ocitag_history_0005'::regclass LOOP
        EXECUTE format('ALTER TABLE ocitag_history_e%s RENAME TO ocitag_history_0005_e%s', e, e);
        EXECUTE format('CREATE TABLE ocitag_history_e%s PARTITION OF ocitag_history '
                       'FOR VALUES IN (%s)', e, e);
    END LOOP;
END $$;

INSERT INTO ocitag_history (at, recorded_at, tag_ref, by_ref, source_ref, version, epoch,
                            change, artifact, event_id)
SELECT at, recorded_at, tag_ref, by_ref, source_ref, version, epoch,
       change + CASE WHEN repointed THEN 8 ELSE 0 END, artifact,
       CASE WHEN event_id ~ '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'
                THEN decode(replace(event_id, '-', ''), 'hex')
            WHEN octet_length(event_id) = 16 THEN '\x00'::bytea || convert_to(event_id, 'UTF8')
            ELSE convert_to(event_id, 'UTF8') END
FROM ocitag_history_0005;

DROP TABLE ocitag_history_0005;

-- By tag and time, and by tag and version (a tag's entries are ordered alike by both).
CREATE INDEX ocitag_history_tag_at ON ocitag_history (tag_ref, at);
-- By artifact: its first 8 bytes, as a bigint (the query re-checks the whole digest).
CREATE INDEX ocitag_history_artifact ON ocitag_history (
    (('x' || encode(substring(artifact FROM 1 FOR 8), 'hex'))::bit(64)::bigint));
-- The creation of the record as of an entry: creations and baselines only.
CREATE INDEX ocitag_history_creations ON ocitag_history (tag_ref, at)
    WHERE (change & 7) IN (0, 1);

ALTER TABLE ocitag_history_baselines ALTER COLUMN version TYPE integer;

-- ?at= (worker/history_reads.py): a tag's versions grow with the epochs (an entry is
-- written in the epoch current when its change applied, and every change adds one to
-- the version), and its times grow with its versions; so the newest partition holding
-- an entry of the tag at or before the instant holds the answer, and so does, for the
-- creation, the newest partition holding a creation (or baseline) at or before that
-- entry. Partitions are probed newest first, each by its own statement (planned for that
-- one partition, not for all of them), and the search stops at the first that answers:
-- the cost is the partitions newer than the answer, not all of them.
CREATE FUNCTION ocitag_history_as_of(p_tag bigint, p_at timestamptz)
RETURNS TABLE (version integer, change smallint, artifact bytea, by text, at timestamptz,
               c_change smallint, c_at timestamptz, c_by text,
               bl_by text, bl_on timestamptz)
LANGUAGE plpgsql STABLE AS $$
DECLARE
    e integer;
    h ocitag_history;
    c ocitag_history;
BEGIN
    FOR e IN SELECT p.epoch FROM ocitag_history_partitions p ORDER BY p.epoch DESC LOOP
        SELECT * INTO h FROM ocitag_history x
        WHERE x.epoch = e AND x.tag_ref = p_tag AND x.at <= p_at
        ORDER BY x.at DESC, x.version DESC LIMIT 1;
        EXIT WHEN FOUND;
    END LOOP;
    IF h.tag_ref IS NULL THEN
        RETURN;
    END IF;
    FOR e IN SELECT p.epoch FROM ocitag_history_partitions p WHERE p.epoch <= h.epoch
             ORDER BY p.epoch DESC LOOP
        SELECT * INTO c FROM ocitag_history x
        WHERE x.epoch = e AND x.tag_ref = p_tag AND (x.change & 7) IN (0, 1)
          AND x.at <= h.at AND (x.at, x.version) <= (h.at, h.version)
        ORDER BY x.at DESC, x.version DESC LIMIT 1;
        EXIT WHEN FOUND;
    END LOOP;
    RETURN QUERY
    SELECT h.version, h.change, h.artifact, b.name, h.at, c.change, c.at, cb.name,
           bl.created_by, bl.created_on
    FROM ocitag_history_names b
    LEFT JOIN ocitag_history_names cb ON cb.ref = c.by_ref
    LEFT JOIN ocitag_history_baselines bl
           ON (c.change & 7) = 0 AND bl.tag_ref = p_tag AND bl.version = c.version
    WHERE b.ref = h.by_ref;
END $$;
