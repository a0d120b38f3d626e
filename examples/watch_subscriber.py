"""A subscriber of ocitag-worker's watch (Server-Sent Events) that resumes where it was.

    python examples/watch_subscriber.py --url http://localhost:8081 --token "$TOKEN" \\
        [--repository docker.io/library/nginx]

keeps a local map of every live tag: the snapshot, then every change. When the
connection drops (the api restarts, a proxy times out) it reconnects with the id of the
last event it got (``Last-Event-ID``) and receives every change after it, none missing;
on ``reset`` it drops its map and takes the fresh snapshot that follows. Each event is
printed as a JSON line; on SIGTERM/SIGINT the map ({OCITag ID: version}) is printed last.
Needs aiohttp (``pip install aiohttp``); any SSE client that sends Last-Event-ID would do.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
from typing import Any
from urllib.parse import quote

import aiohttp


class TagMap:
    """The live tags by OCITag ID, and where in the watch we are (``last_id``)."""

    def __init__(self) -> None:
        self.tags: dict[str, dict[str, Any]] = {}
        self.last_id: str | None = None

    def apply(self, name: str, data: str, event_id: str | None) -> None:
        if name == "reset":
            self.tags.clear()
        elif name == "upsert":
            record = json.loads(data)
            self.tags[f"{record['repository']}:{record['tag']}"] = record
        elif name == "delete":
            self.tags.pop(json.loads(data)["tag"], None)
        if event_id:
            self.last_id = event_id
        print(json.dumps({"event": name, "id": event_id, "data": data}), flush=True)


async def follow(session: aiohttp.ClientSession, url: str, token: str, tags: TagMap) -> None:
    """One connection: read events until it ends (SSE: fields, blank line ends one)."""
    headers = {"Authorization": f"Bearer {token}", "Accept": "text/event-stream"}
    if tags.last_id:
        headers["Last-Event-ID"] = tags.last_id
    async with session.get(url, headers=headers) as response:
        response.raise_for_status()
        data: list[str] = []
        name, event_id = "message", None
        async for raw in response.content:
            line = raw.decode().rstrip("\r\n")
            if not line:
                if data:
                    tags.apply(name, "\n".join(data), event_id)
                name, data, event_id = "message", [], None  # the next event
            elif not line.startswith(":"):
                field, _, value = line.partition(":")
                value = value.removeprefix(" ")
                if field == "event":
                    name = value
                elif field == "data":
                    data.append(value)
                elif field == "id":
                    event_id = value


async def main(args: argparse.Namespace) -> None:
    url = f"{args.url.rstrip('/')}/ocitags/?watch=true"
    if args.repository:
        url += f"&repository={quote(args.repository, safe='')}"
    tags = TagMap()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=5, sock_read=60)  # > heartbeat

    async def run() -> None:
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while True:
                try:
                    await follow(session, url, args.token, tags)
                except (aiohttp.ClientError, TimeoutError) as exc:
                    print(json.dumps({"reconnecting": str(exc) or type(exc).__name__}), flush=True)
                await asyncio.sleep(args.retry_seconds)

    task = asyncio.create_task(run())
    await stop.wait()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    print(json.dumps({"tags": {k: v["version"] for k, v in sorted(tags.tags.items())}}))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", default="http://localhost:8081", help="the api's base URL")
    parser.add_argument("--token", required=True, help="a bearer token of OCITAG_API_TOKENS")
    parser.add_argument("--repository", help="one repository (default: all)")
    parser.add_argument("--retry-seconds", type=float, default=1.0)
    asyncio.run(main(parser.parse_args()))
    sys.exit(0)
