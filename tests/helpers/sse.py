"""Reading Server-Sent Events as a client does (the WHATWG parsing rules that matter
here: fields, comments, multi-line data, blank line ends an event)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Event:
    name: str
    data: str
    id: str | None

    @property
    def json(self) -> Any:
        return json.loads(self.data)


@dataclass
class Parser:
    """Feed lines; completed events come out. ``comments`` counts comment lines."""

    comments: int = 0
    _name: str = "message"
    _data: list[str] | None = None
    _id: str | None = None

    def line(self, line: str) -> Event | None:
        if line == "":
            if self._data is None:
                return None
            event = Event(self._name, "\n".join(self._data), self._id)
            self._name, self._data, self._id = "message", None, None
            return event
        if line.startswith(":"):
            self.comments += 1
            return None
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "event":
            self._name = value
        elif field == "data":
            self._data = [*(self._data or []), value]
        elif field == "id":
            self._id = value
        return None


def parse(text: str) -> list[Event]:
    return list(events_of(text.split("\n")))


def events_of(lines: Iterable[str]) -> Iterator[Event]:
    parser = Parser()
    for line in lines:
        event = parser.line(line.rstrip("\r"))
        if event is not None:
            yield event


async def stream_events(content: Any, parser: Parser | None = None) -> AsyncIterator[Event]:
    """Events of an aiohttp response body (``response.content``), as they arrive."""
    parser = parser or Parser()
    async for raw in content:
        event = parser.line(raw.decode().rstrip("\r\n"))
        if event is not None:
            yield event
