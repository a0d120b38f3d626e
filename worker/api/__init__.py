"""``ocitag-worker api``: the seed's HTTP operation (``PUT /ocitags/{tag}/``) and its read
and delete companions, served through the worker's own event path.

Every write becomes an event on the input topic; the HTTP answer is that event's outcome,
so the API and the event stream can never disagree. A component: it depends on the
shared core (``worker.encode``, ``worker.kafka``, ``worker.identifiers`` …), never on
ingest or reconcile.

- ``auth``: bearer tokens and the caller each names (pure);
- ``requests``: path, body and header rules of a request (pure);
- ``replies``: HTTP answers built from outcomes and problems (pure);
- ``problems``: the API's own problem catalogue (pure);
- ``openapi``: the OpenAPI 3.1 document (pure);
- ``waiters`` / ``listener``: request-reply over the outcome topic;
- ``store``: reads and the idempotency-key times in PostgreSQL;
- ``server``: the aiohttp routes; ``app``: the process lifecycle.
"""
