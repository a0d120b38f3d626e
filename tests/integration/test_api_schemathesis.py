"""A property-based run of the API's own OpenAPI document against the running API (and
worker) with schemathesis: no answer may break the document, none may be a 5xx."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.helpers.api import TOKEN, api_overrides, api_processes
from tests.helpers.registry import free_port
from worker.kafka import ensure_topics
from worker.settings import Settings

pytestmark = pytest.mark.integration

CHECKS = ",".join(
    [
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_headers_conformance",
        "response_schema_conformance",
        "negative_data_rejection",
        "missing_required_header",
        "unsupported_method",
        "ignored_auth",
    ]
)


def wait_ready(port: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"the API was not ready within {timeout} s")
        time.sleep(0.2)


async def test_the_openapi_document_holds_against_the_running_api(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    api_port, probe_port = free_port(), free_port()
    settings = make_settings(
        # the watch off: a stream never ends, so schemathesis gets its documented 429
        **api_overrides(api_port=api_port, api_timeout_seconds=5, api_max_watches=0),
        http_port=probe_port,
        log_level="info",
        log_format="json",
    )
    await ensure_topics(
        settings,
        [settings.topics.input_topic, settings.topics.outcome_topic, settings.topics.dlq_topic],
    )
    examples = os.environ.get("OCITAG_SCHEMATHESIS_EXAMPLES", "30")
    with api_processes(settings, tmp_path):
        wait_ready(probe_port)
        run = subprocess.run(
            [
                str(Path(sys.executable).with_name("schemathesis")),
                "run",
                f"http://127.0.0.1:{api_port}/openapi.json",
                "--header",
                f"Authorization: Bearer {TOKEN}",
                "--checks",
                CHECKS,
                "--max-examples",
                examples,
                "--seed",
                "20261202",
                "--phases",
                "examples,coverage,fuzzing",
                # one worker: with two, Hypothesis's description of schemathesis's
                # filter lambdas (it reads and parses their source) raced on a fresh
                # checkout and failed the run with a SyntaxError inside schemathesis
                "--workers",
                "1",
                "--request-timeout",
                "15",
                "--no-color",
                "--generation-database",
                "none",
            ],
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
            cwd=tmp_path,
        )
    report = run.stdout[-20_000:] + run.stderr[-5_000:]
    assert run.returncode == 0, report
    assert "No issues found" in run.stdout or " passed" in run.stdout, report
