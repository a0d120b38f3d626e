"""A request written on a transport uvloop has already closed is a broken connection,
which callers retry, not a RuntimeError that kills them (worker/kafkaconn.py)."""

from __future__ import annotations

import asyncio
import socket
import struct
from typing import Any

import pytest
import uvloop
from aiokafka.conn import AIOKafkaConnection
from aiokafka.errors import KafkaConnectionError
from aiokafka.protocol.metadata import MetadataRequest

from worker.kafka import client_options
from worker.settings import Settings


@pytest.fixture(autouse=True)
def installed() -> None:
    """The check is installed with the first client's options, as every command builds
    them (and never at import)."""
    client_options(Settings.model_validate({}))


class Transport:
    def __init__(self, closing: bool) -> None:
        self.closing = closing

    def is_closing(self) -> bool:
        return self.closing


class Writer:
    """uvloop's stream writer once the broker's end is gone."""

    def __init__(self, closing: bool) -> None:
        self.transport = Transport(closing)

    def write(self, data: bytes) -> None:
        raise RuntimeError(
            "unable to perform operation on <TCPTransport closed=True reading=False>; "
            "the handler is closed"
        )


def connection(writer: Writer) -> Any:
    conn = AIOKafkaConnection("127.0.0.1", 31192)
    conn._writer = writer
    conn._versions = {MetadataRequest.API_KEY: (0, 9)}  # as a broker announced them
    return conn


async def test_a_write_on_a_closed_transport_is_a_broken_connection() -> None:
    conn = connection(Writer(closing=True))
    closed: list[object] = []
    conn.close = lambda reason=None, exc=None: closed.append(reason)
    with pytest.raises(KafkaConnectionError, match=r"127\.0\.0\.1:31192 broken: unable to perform"):
        await conn.send(MetadataRequest([]))
    assert len(closed) == 1


async def test_a_sasl_token_written_on_a_closed_transport_is_a_broken_connection() -> None:
    conn = connection(Writer(closing=True))
    closed: list[object] = []
    conn.close = lambda reason=None, exc=None: closed.append(reason)
    with pytest.raises(KafkaConnectionError, match=r"127\.0\.0\.1:31192 broken: unable to perform"):
        await conn._send_sasl_token(b"token")
    assert len(closed) == 1


async def test_any_other_runtime_error_is_left_as_it_is() -> None:
    conn = connection(Writer(closing=False))
    with pytest.raises(RuntimeError, match="handler is closed"):
        await conn.send(MetadataRequest([]))


def test_a_broker_that_reset_the_connection_under_uvloop() -> None:
    """The real thing: uvloop, a peer that resets the connection (a killed broker with
    unread data), uvloop closing the transport, then a request written on it."""

    async def scenario() -> None:
        async def reset(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            linger = struct.pack("ii", 1, 0)  # close with RST
            writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
            writer.close()

        server = await asyncio.start_server(reset, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for _ in range(500):  # uvloop closes the transport once it reads the reset
            if writer.transport.is_closing():
                break
            await asyncio.sleep(0.01)
        conn = AIOKafkaConnection("127.0.0.1", port)
        conn._reader, conn._writer = reader, writer
        conn._versions = {MetadataRequest.API_KEY: (0, 9)}
        conn._read_task = asyncio.get_running_loop().create_future()  # the reader: done
        conn._read_task.set_result(None)
        try:
            with pytest.raises(KafkaConnectionError, match="broken: unable to perform"):
                await conn.send(MetadataRequest([]))
            assert conn._writer is None  # closed as broken: the client connects again
        finally:
            server.close()
            await server.wait_closed()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(scenario())
