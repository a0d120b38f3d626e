-- Tag deletions (docs/contract.md "Deletion"): a deleted tag keeps its row as a tombstone, so
-- that its key (last_modified_on, last_event_source, last_event_id) still supersedes
-- older moves. A tombstone keeps the last artifact and version; one recorded for a tag
-- never seen live (a deletion answered 404) is at version 0, with no artifact and no
-- creation yet.

ALTER TABLE ocitags
    ADD COLUMN deleted_on  timestamptz,       -- the deletion's time; NULL while live
    ADD COLUMN deleted_by  text,              -- the deletion's actor; NULL while live
    -- when the worker last wrote the row (processing time, not event time): tombstone
    -- retention counts from it, so a backlog of old deletions is not pruned on arrival
    ADD COLUMN recorded_at timestamptz NOT NULL DEFAULT now(),
    ALTER COLUMN artifact   DROP NOT NULL,
    ALTER COLUMN created_by DROP NOT NULL,
    ALTER COLUMN created_on DROP NOT NULL,
    DROP CONSTRAINT ocitags_version_check,
    ADD CONSTRAINT ocitags_version_check CHECK (version >= 0),
    ADD CONSTRAINT ocitags_deletion_state CHECK ((deleted_on IS NULL) = (deleted_by IS NULL)),
    -- a live record is a whole OCITag; only a never-seen tag's tombstone lacks one
    ADD CONSTRAINT ocitags_live_is_whole CHECK (
        deleted_on IS NOT NULL
        OR (artifact IS NOT NULL AND created_by IS NOT NULL AND created_on IS NOT NULL
            AND version >= 1)
    );

-- what tombstone pruning scans: the deleted rows only, oldest first
CREATE INDEX ocitags_tombstones_recorded_at ON ocitags (recorded_at)
    WHERE deleted_on IS NOT NULL;

-- The live records: the seed's OCITag plus version, for readers that must not see
-- tombstones.
CREATE VIEW live_ocitags AS
SELECT repository, tag, artifact, created_by, created_on, last_modified_by,
       last_modified_on, version
FROM ocitags
WHERE deleted_on IS NULL;
