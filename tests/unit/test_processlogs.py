"""The excerpt of a fault scenario's process log shown on failure
(tests/helpers/processlogs.py): every line but the per-event ones, the last of those."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.helpers.processlogs import log_excerpt, process_logs


def line(event: str, **fields: object) -> str:
    return json.dumps({"event": event, **fields})


def test_per_event_lines_are_left_out_but_the_last() -> None:
    text = "\n".join(
        [
            line("running"),
            line("event", offset=1),
            line("retrying", cause="kafka_timeout"),
            "Traceback (most recent call last):",
            line("event", offset=2),
        ]
    )
    excerpt = log_excerpt(text).splitlines()
    assert excerpt == [
        "[2 per-event lines left out; 0 earlier lines left out; 3 lines follow]",
        line("running"),
        line("retrying", cause="kafka_timeout"),
        "Traceback (most recent call last):",
        f"[last per-event line] {line('event', offset=2)}",
    ]


def test_only_the_last_lines_are_kept() -> None:
    text = "\n".join(line("retrying", attempt=n) for n in range(10))
    excerpt = log_excerpt(text, keep=3).splitlines()
    assert excerpt[0] == "[0 per-event lines left out; 7 earlier lines left out; 3 lines follow]"
    assert excerpt[1:] == [line("retrying", attempt=n) for n in (7, 8, 9)]


def test_lines_that_only_look_like_json_are_kept() -> None:
    text = '{"event": "event" cut short\n[1, 2]\n{}'
    assert log_excerpt(text).splitlines()[1:] == ['{"event": "event" cut short', "[1, 2]", "{}"]


@given(st.lists(st.sampled_from(["event", "running", "retrying", "plain text"]), max_size=40),
       st.integers(min_value=0, max_value=50))  # fmt: skip
def test_every_line_is_counted_once(kinds: list[str], keep: int) -> None:
    lines = [k if k == "plain text" else line(k, n=i) for i, k in enumerate(kinds)]
    excerpt = log_excerpt("\n".join(lines), keep).splitlines()
    events = kinds.count("event")
    others = len(kinds) - events
    shown = min(keep, others)
    assert excerpt[0] == (
        f"[{events} per-event lines left out; {others - shown} earlier lines left out; "
        f"{shown} lines follow]"
    )
    assert len(excerpt) == 1 + shown + (1 if events else 0)


def test_each_log_of_the_directory_is_a_section(tmp_path: Path) -> None:
    (tmp_path / "leaders-w1.log").write_text(line("running") + "\n" + line("event") + "\n")
    (tmp_path / "leaders-ingest.log").write_text("plain\n")
    (tmp_path / "report.json").write_text("{}")
    sections = dict(process_logs(tmp_path))
    worker = f"process log leaders-w1.log ({tmp_path / 'leaders-w1.log'})"
    assert list(sections) == [
        f"process log leaders-ingest.log ({tmp_path / 'leaders-ingest.log'})",
        worker,
    ]
    assert sections[worker].splitlines()[1] == line("running")


def test_a_failed_scenario_shows_its_process_logs(pytester: pytest.Pytester) -> None:
    """tests/faults/conftest.py: the failure report carries each log's excerpt; a
    passing test's report does not."""
    pytester.makepyfile(
        test_scenario=f"""
        def test_stuck(tmp_path):
            (tmp_path / "leaders-w1.log").write_text({line("event")!r} + "\\n" +
                                                      {line("commit_retrying")!r} + "\\n")
            raise AssertionError("not drained")

        def test_fine(tmp_path):
            (tmp_path / "leaders-w1.log").write_text({line("drained")!r} + "\\n")
        """
    )
    result = pytester.runpytest_inprocess(
        "-p", "tests.faults.conftest", "-p", "no:cacheprovider", "-p", "no:asyncio"
    )
    result.assert_outcomes(passed=1, failed=1)
    out = result.stdout.str()
    assert "process log leaders-w1.log" in out
    assert line("commit_retrying") in out
    assert f"[last per-event line] {line('event')}" in out
    assert line("drained") not in out
