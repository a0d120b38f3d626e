"""Calling the probes on OCITAG_HTTP_PORT, once or over a while."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp


async def probe(port: int, path: str) -> tuple[int, dict[str, Any]]:
    """(status, JSON body) of ``path`` on the probes' port."""
    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}{path}") as r:
        return r.status, await r.json()


async def answers_over(
    port: int, seconds: float, path: str = "/healthz", every: float = 0.2
) -> list[tuple[int, dict[str, Any]]]:
    """Every answer of ``path`` asked each ``every`` seconds for ``seconds``: to show a
    probe holds over a span (longer than a timeout), not just once."""
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    answers = [await probe(port, path)]
    while loop.time() < end:
        await asyncio.sleep(every)
        answers.append(await probe(port, path))
    return answers


async def answering(port: int, path: str, status: int = 200) -> bool:
    """Whether ``path`` answers ``status`` now (False while the server is not up)."""
    try:
        return (await probe(port, path))[0] == status
    except aiohttp.ClientError:
        return False
