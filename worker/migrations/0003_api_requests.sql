-- The API's Idempotency-Key record: when the first request with a key was received.
-- An event's time is part of its content, so a retried request must publish the very
-- same time for the worker to see a repeat (same answer) rather than a reuse (409).
-- Kept as long as processed events are (OCITAG_PROCESSED_RETENTION_SECONDS).
CREATE TABLE api_requests (
    source      text        NOT NULL,   -- the caller's event source (urn:ocitag:api:<caller>)
    key         text        NOT NULL,   -- the Idempotency-Key, the event id
    received_at timestamptz NOT NULL,
    PRIMARY KEY (source, key)
);

CREATE INDEX api_requests_received_at ON api_requests (received_at);
