"""Ingest: registry webhooks → tag events (docs/contract.md "Ingest").

One module per registry kind maps a delivery to :mod:`worker.ingest.mapping` values;
``kinds`` registers them with their authentication scheme; ``server`` is the HTTP edge.
"""
