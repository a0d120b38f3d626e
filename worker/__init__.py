"""ocitag-worker: applies 'tag moved' events from Kafka to PostgreSQL, one outcome per event."""

__version__ = "0.1.0"
