"""``ocitag-worker reconcile``: repair drift between a registry and the live records.

Reads the registry's tags through the OCI distribution API (worker/oci.py), compares
them with the live records of that host (a pure diff, diff.py) and publishes the
``ocitag.moved.v1`` / ``ocitag.deleted.v1`` events that make the records agree
(events.py), through the worker's own event path. Depends only on the core.
"""
