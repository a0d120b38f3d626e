-- The tag records (the seed's OCITag plus version and the key of the last applied event)
-- and the idempotency record of processed events.

CREATE TABLE ocitags (
    repository        text        NOT NULL,
    tag               text        NOT NULL,
    artifact          text        NOT NULL,
    created_by        text        NOT NULL,
    created_on        timestamptz NOT NULL,
    last_modified_by  text        NOT NULL,
    last_modified_on  timestamptz NOT NULL,   -- the applied event's time: first part of its ordering key
    version           bigint      NOT NULL CHECK (version >= 1),
    last_event_source text        NOT NULL,   -- the rest of the ordering key (time, source, id)
    last_event_id     text        NOT NULL,
    PRIMARY KEY (repository, tag)
);

-- One row per (source, id) ever processed (until pruned): the content fingerprint tells a
-- replay from an id reuse, and the first outcome is republished byte-identical.
CREATE TABLE processed_events (
    source       text        NOT NULL,
    id           text        NOT NULL,
    fingerprint  bytea       NOT NULL,
    processed_at timestamptz NOT NULL,
    status       smallint,               -- NULL only inside the claiming transaction
    outcome_key  bytea,
    outcome      bytea,
    PRIMARY KEY (source, id)
);

CREATE INDEX processed_events_processed_at ON processed_events (processed_at);
