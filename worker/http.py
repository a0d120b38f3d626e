"""/metrics, /healthz and /readyz on OCITAG_HTTP_PORT."""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from worker import metrics
from worker.health import Health


def make_app(health: Health, registry: CollectorRegistry) -> web.Application:
    async def metrics_view(_: web.Request) -> web.Response:
        body = generate_latest(registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(_: web.Request) -> web.Response:
        check = health.live()
        return web.json_response(
            {"status": "ok" if check.ok else "fail", "reason": check.reason},
            status=200 if check.ok else 503,
        )

    async def readyz(_: web.Request) -> web.Response:
        check = await health.ready()
        return web.json_response(
            {"status": "ok" if check.ok else "fail", "reason": check.reason},
            status=200 if check.ok else 503,
        )

    app = web.Application()
    app.router.add_get("/metrics", metrics_view)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return app


async def serve(health: Health, host: str, port: int, command: str) -> web.AppRunner:
    """Serve ``command``'s metrics (worker/metrics.py ``COMMANDS``) and probes."""
    metrics.serve_without_created_series()
    runner = web.AppRunner(make_app(health, metrics.registry(command)), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
