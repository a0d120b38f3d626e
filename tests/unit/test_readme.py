"""The README and the pages it leads to, kept true for a newcomer: the README's
prerequisites are complete, its sample output is what ``outcomes`` prints, the layout
page names every module, the Makefile decides local stack or given servers by one rule,
the settings page names every secret and the observability page what /healthz watches."""

from __future__ import annotations

import re

from tests.helpers.docs import README, REPO, page, section
from worker.health import COMMAND_PARTS
from worker.settings import SECRET_FIELDS, env_name
from worker.watch import describe

HEX = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_the_prerequisites_name_everything_make_test_needs() -> None:
    needs = section(README, "Prerequisites")
    for what in (
        "Python 3.11",
        "Java 17",
        "Maven",
        "PostgreSQL 15",
        "openssl",
        "Node.js 18",
        "npm",
        "promtool",
        "PyPI",
        "npm registry",
        "Maven Central",
        "Debian archive",
        "Go module proxy",
    ):
        assert what in needs, f"the README's prerequisites do not say {what}"


def test_the_sample_output_is_what_outcomes_prints() -> None:
    sample = section(README, "Set up and run: two commands")
    line = re.search(r"^200 created .*\(event ([0-9a-f-]+)\)$", sample, re.MULTILINE)
    assert line is not None, "no sample outcome line in the README"
    printed = describe(
        {
            "status": 200,
            "change": "created",
            "subject": "docker.io/istio/pilot:1.3.0",
            "resourceversion": 1,
            "causationid": line.group(1),
            "data": {"artifact": HEX, "last_modified_by": "alice"},
        }
    )
    assert line.group(0) == printed


def test_the_layout_comes_first_and_names_every_module() -> None:
    assert README.index("(docs/layout.md)") < README.index("\n## Guarantees\n")
    layout = page("layout.md")
    modules = {
        p.stem for p in (REPO / "worker").glob("*.py") if p.stem not in {"__init__", "__main__"}
    }
    missing = {m for m in modules if f"`{m}`" not in layout}
    assert not missing, f"docs/layout.md does not name worker/{missing}"


def test_the_makefile_has_one_rule_for_local_stack_or_given_servers() -> None:
    makefile = (REPO / "Makefile").read_text(encoding="utf-8")
    assert makefile.count("KAFKA_BOOTSTRAP_SERVERS:-") == 1
    assert makefile.count("DATABASE_URL:-") == 1
    assert "$(STACK) up" not in makefile.split("\ntest:", 1)[1].split("\n\n", 1)[0]


def test_the_secrets_the_settings_page_names_are_the_secret_settings() -> None:
    sentence = re.search(r"Secrets \(([^)]*)\)", page("settings.md"))
    assert sentence is not None
    named = set(re.findall(r"`([A-Z_]+)`", sentence.group(1)))
    assert named == {env_name(field) for field in SECRET_FIELDS}


def test_the_healthz_text_names_what_each_command_watches() -> None:
    observability = page("observability.md")
    start = observability.index("- `/healthz` — liveness")
    text = observability[start : observability.index("\n- `/readyz`", start)]
    for command, parts in COMMAND_PARTS.items():
        after = text.index(f"`{command}")
        for part in parts:
            assert f"(`{part}`" in text[after:], f"/healthz does not say {command} watches {part}"
