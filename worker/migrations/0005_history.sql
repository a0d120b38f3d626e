-- History: where every tag pointed, and when (issue 22; docs/history.md).
--
-- One row per 200 outcome, written by the applier in the same statement that records the
-- event as processed (worker/store.py, ``_RECORD``): no change without its entry, no entry
-- without its change. Partitioned like the idempotency record (0004): by ``epoch``, the
-- same epoch the applier already reads (``processed_current``), so the entry costs no
-- round trip; ``ocitag_history_partitions`` remembers when each epoch ended (the
-- idempotency record forgets its epochs after 7 days) and worker/partitions.py drops
-- the history partitions that ended more than OCITAG_HISTORY_RETENTION_SECONDS ago
-- (0 = never).
--
-- Compact, because every applied change pays for it: the tag, the actor and the event
-- source are 8-byte references (the first 8 bytes of SHA-256 of the string, as a signed
-- bigint) into ``ocitag_history_names``, which holds each string once; the artifact is
-- its raw digest (32 bytes for sha256, 64 for sha512). Measured cost per entry:
-- docs/history.md "What it costs".

CREATE TABLE ocitag_history_names (
    ref  bigint PRIMARY KEY,   -- worker/history.py ``name_ref``
    name text   NOT NULL
);

CREATE TABLE ocitag_history_partitions (
    epoch      integer     PRIMARY KEY,
    started_at timestamptz NOT NULL,
    ended_at   timestamptz            -- NULL while it is the current one
);

-- Columns ordered widest-aligned first; no column is ever NULL (no null bitmap).
CREATE TABLE ocitag_history (
    at          timestamptz NOT NULL,   -- the event's time
    recorded_at timestamptz NOT NULL,   -- when the worker applied it
    tag_ref     bigint      NOT NULL,   -- the OCITag ID
    by_ref      bigint      NOT NULL,   -- last_modified_by after a move, deleted_by
    source_ref  bigint      NOT NULL,   -- the event's source
    version     bigint      NOT NULL,
    epoch       integer     NOT NULL,
    change      smallint    NOT NULL,   -- 0 baseline, 1 created, 2 updated, 3 unchanged, 4 deleted
    repointed   boolean     NOT NULL,
    artifact    bytea       NOT NULL,   -- raw digest; a deletion's: what it pointed at
    event_id    text        NOT NULL
) PARTITION BY LIST (epoch);

-- By tag and time, and by tag and version: one index serves both, because a tag's
-- entries are ordered alike by both (an event is applied only with a greater key
-- (time, source, id), and every applied event adds one to the version).
CREATE INDEX ocitag_history_tag_at ON ocitag_history (tag_ref, at, version);
-- By artifact: its first 8 bytes, as a bigint (an index entry of 16 bytes; as bytea it
-- would be 24), are selective enough (the query re-checks the whole digest).
CREATE INDEX ocitag_history_artifact ON ocitag_history (
    (('x' || encode(substring(artifact FROM 1 FOR 8), 'hex'))::bit(64)::bigint));
-- The creation of the record as of an entry (?at= shows created_by / created_on): the
-- latest creation at or before it, found without walking every move since. Only
-- creations (and baselines) pay for it.
CREATE INDEX ocitag_history_creations ON ocitag_history (tag_ref, at, version)
    WHERE change IN (0, 1);

-- A baseline entry starts history from a record created earlier: its creation is kept
-- beside it (written once, by this migration).
CREATE TABLE ocitag_history_baselines (
    tag_ref    bigint      NOT NULL,
    version    bigint      NOT NULL,
    created_by text        NOT NULL,
    created_on timestamptz NOT NULL,
    PRIMARY KEY (tag_ref, version)
);

-- A partition for every epoch the idempotency record has (the current one and the next).
DO $$
DECLARE e integer;
BEGIN
    FOR e IN SELECT epoch FROM processed_partitions
             UNION SELECT epoch + 1 FROM processed_current
             UNION SELECT epoch FROM processed_current LOOP
        EXECUTE format('CREATE TABLE ocitag_history_e%s PARTITION OF ocitag_history '
                       'FOR VALUES IN (%s)', e, e);
    END LOOP;
END $$;

INSERT INTO ocitag_history_partitions (epoch, started_at, ended_at)
SELECT epoch, started_at, ended_at FROM processed_partitions;

-- A migration cannot invent the past: history starts from the present. Every live record
-- gets one ``baseline`` entry, the record as it is (docs/upgrading.md).
CREATE OR REPLACE FUNCTION pg_temp.name_ref(name text) RETURNS bigint
    LANGUAGE sql IMMUTABLE
    RETURN ('x' || encode(substring(sha256(convert_to(name, 'UTF8')) FROM 1 FOR 8), 'hex'))
           ::bit(64)::bigint;

INSERT INTO ocitag_history_names (ref, name)
SELECT pg_temp.name_ref(name), name FROM (
    SELECT repository || ':' || tag FROM live_ocitags
    UNION SELECT last_modified_by FROM live_ocitags
    UNION SELECT last_event_source FROM ocitags WHERE deleted_on IS NULL
) AS n(name)
ON CONFLICT (ref) DO NOTHING;

INSERT INTO ocitag_history (at, recorded_at, tag_ref, by_ref, source_ref, version, epoch,
                            change, repointed, artifact, event_id)
SELECT t.last_modified_on, now(), pg_temp.name_ref(t.repository || ':' || t.tag),
       pg_temp.name_ref(t.last_modified_by), pg_temp.name_ref(t.last_event_source),
       t.version, c.epoch, 0, false,
       CASE WHEN t.artifact LIKE 'sha512:%' THEN decode(substring(t.artifact FROM 8), 'hex')
            ELSE decode(t.artifact, 'hex') END,
       t.last_event_id
FROM ocitags t CROSS JOIN processed_current c
WHERE t.deleted_on IS NULL;

INSERT INTO ocitag_history_baselines (tag_ref, version, created_by, created_on)
SELECT pg_temp.name_ref(repository || ':' || tag), version, created_by, created_on
FROM live_ocitags;
