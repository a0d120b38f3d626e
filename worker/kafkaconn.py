"""aiokafka's connection, made to fail as a broken connection when the event loop has
already closed its transport.

When a broker dies, the worker may write a request on its connection before aiokafka's
reader has seen the end of the stream. aiokafka catches ``OSError`` there (what the
standard event loop raises, or nothing); uvloop, the worker's loop, raises
``RuntimeError: unable to perform operation on <TCPTransport closed=True …>; the handler
is closed`` instead (aio-libs/aiokafka#1038, open). That escapes every caller as a bug:
the offset committer died with it and the worker stopped (the replicated leaders
scenario, a broker killed under load: the group coordinator's connection), and the
producer's sender or the consumer's fetcher would die the same way. ``install()`` wraps
``AIOKafkaConnection.send`` so that this one error is what aiokafka already makes of a
write that fails: the connection closed as broken, ``KafkaConnectionError`` raised,
which every caller retries. Any other ``RuntimeError`` is left as it is."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiokafka.conn import AIOKafkaConnection, CloseReason
from aiokafka.errors import KafkaConnectionError

_INSTALLED = "_ocitag_closed_transport_checked"


def _closed_transport(conn: Any) -> bool:
    writer = getattr(conn, "_writer", None)
    transport = getattr(writer, "transport", None)
    return transport is not None and transport.is_closing()


def install() -> None:
    """Wrap ``AIOKafkaConnection.send`` and ``_send_sasl_token`` (the SASL handshake's
    own writes) once (idempotent)."""
    for name in ("send", "_send_sasl_token"):
        original: Callable[..., Any] = getattr(AIOKafkaConnection, name)
        if not getattr(original, _INSTALLED, False):
            setattr(AIOKafkaConnection, name, _checked(original))


def _checked(write: Callable[..., Any]) -> Callable[..., Any]:
    def checked(self: Any, payload: Any, expect_response: bool = True) -> Any:
        try:
            return write(self, payload, expect_response)
        except RuntimeError as err:
            if not _closed_transport(self):
                raise
            self.close(reason=CloseReason.CONNECTION_BROKEN)
            raise KafkaConnectionError(
                f"Connection at {self._host}:{self._port} broken: {err}"
            ) from err

    setattr(checked, _INSTALLED, True)
    return checked
