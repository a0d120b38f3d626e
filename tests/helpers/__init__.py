"""Helpers shared by the test files (test files import from here, never from each other):

- ``services``: finding real Kafka and PostgreSQL (environment, testcontainers, local stack);
- ``harness``: the worker's own ``run()`` in-process, publishing records, collecting outcomes;
- ``events``: tag-moved events as producers write them;
- ``cli``: running the console script as a subprocess;
- ``contract``: the schema files, the vendored seed and their validators;
- ``store``: batches for the store and outcome summaries; ``applier`` a separate process;
- ``model``: the reference model of the contract's semantics; ``strategies``: hypothesis;
- ``faults``: the fault-injection harness; ``wait``: ``eventually()``;
- ``registry``: the real OCI registry (CNCF Distribution) and its push clients;
- ``cloudevents_sdk``: reading outcomes with the CloudEvents SDK, a client we did not write.
- ``outcomes_reference``: the outcome builder before it was made lean, the oracle of
  tests/unit/test_outcome_bytes.py (byte for byte); ``decode_reference``: the decoder
  before its hot path was trimmed, the oracle of tests/unit/test_decode_oracle.py.
"""
