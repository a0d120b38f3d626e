"""Server-Sent Events framing (the WHATWG HTML "server-sent events" stream format). Pure.

Hand-written because it is four lines of the format and the watch frames every event
once per feed record and reuses the bytes for every watcher (docs/subscribers.md
"Watch"); a library's per-message objects would cost that sharing. A data payload is one
``data:`` line per line of it (a field value cannot hold a line break); ``id`` and
``event`` values never hold one (they are ours: an event name and a resume id).
"""

from __future__ import annotations

_LINE_BREAKS = (b"\r\n", b"\r")


def event(name: str, data: bytes, event_id: str) -> bytes:
    """One event: ``id``, ``event``, then the data (one ``data:`` line per line of it)."""
    if "\n" in name or "\r" in name or "\n" in event_id or "\r" in event_id:
        raise ValueError("an SSE event name or id cannot hold a line break")
    head = f"id: {event_id}\nevent: {name}\n".encode()
    if b"\n" not in data and b"\r" not in data:
        return head + b"data: " + data + b"\n\n"
    for brk in _LINE_BREAKS:
        data = data.replace(brk, b"\n")
    return head + b"".join(b"data: " + line + b"\n" for line in data.split(b"\n")) + b"\n"


def comment(text: str) -> bytes:
    """A comment line (clients ignore it; it keeps idle connections and proxies open)."""
    return b": " + text.replace("\r", " ").replace("\n", " ").encode() + b"\n\n"
