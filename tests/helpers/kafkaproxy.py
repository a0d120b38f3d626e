"""A TCP proxy in front of a Kafka broker that holds the broker's answers: on each
connection the first answer (ApiVersions) passes at once, every later one ``hold``
seconds late. A client's bootstrap then waits on its metadata request, where a test
can cancel it."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field


async def _frames(reader: asyncio.StreamReader) -> bytes | None:
    """One Kafka frame (4-byte big-endian size, then the payload), or None at EOF."""
    try:
        size = await reader.readexactly(4)
        return size + await reader.readexactly(int.from_bytes(size, "big"))
    except asyncio.IncompleteReadError:
        return None


@dataclass
class HoldingProxy:
    target_host: str
    target_port: int
    hold: float
    port: int = 0
    open_connections: int = 0
    #: set when a connection sent its second request (the bootstrap's metadata)
    second_request: asyncio.Event = field(default_factory=asyncio.Event)
    _server: asyncio.Server | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        assert self._server is not None
        self._server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        self.open_connections += 1
        broker_r, broker_w = await asyncio.open_connection(self.target_host, self.target_port)
        up = asyncio.create_task(self._requests(client_r, broker_w))
        down = asyncio.create_task(self._answers(broker_r, client_w))
        self._tasks |= {up, down}
        try:
            await up  # the client closed its side
        finally:
            self.open_connections -= 1
            down.cancel()
            for writer in (client_w, broker_w):
                with contextlib.suppress(Exception):
                    writer.close()

    async def _requests(self, client: asyncio.StreamReader, broker: asyncio.StreamWriter) -> None:
        sent = 0
        while (frame := await _frames(client)) is not None:
            sent += 1
            if sent == 2:
                self.second_request.set()
            broker.write(frame)
            await broker.drain()

    async def _answers(self, broker: asyncio.StreamReader, client: asyncio.StreamWriter) -> None:
        answered = 0
        while (frame := await _frames(broker)) is not None:
            answered += 1
            if answered > 1:
                await asyncio.sleep(self.hold)
            client.write(frame)
            await client.drain()
