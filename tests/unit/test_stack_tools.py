"""``deploy/local/stack tools`` builds what ``make run`` uses (the registry and crane),
``tools --test`` what the tests use too (oras, Jaeger; ``--clients`` without Jaeger,
``--jaeger`` only it), ``tools --deploy`` deploy/check's helm, and a build says how it is
going while ``go install`` is silent. Against a stand-in
``go`` that records what it is asked to install and finishes only when the test lets it
(once the progress line was seen)."""

from __future__ import annotations

import os
import subprocess
import threading
from pathlib import Path

from tests.helpers.services import STACK

FAKE_GO = """#!/usr/bin/env bash
if [[ $1 == mod ]]; then  # go mod download -json MODULE@VERSION: a module source dir
  mkdir -p "$FAKE_GO_MODULE/cmd/jaeger"
  printf '{\\n\\t"Path": "%s",\\n\\t"Dir": "%s"\\n}\\n' "${@: -1}" "$FAKE_GO_MODULE"
  exit 0
fi
printf '%s\\n' "${@: -1}" >>"$FAKE_GO_LOG"
name=${@: -1}; name=${name%@*}; name=${name##*/}
echo "compiling example.org/$name"
while [[ ! -e $FAKE_GO_RELEASE ]]; do sleep 0.02; done
out="$GOBIN/$name"
prev=""
for arg in "$@"; do  # go build -v FLAGS... -o OUT ./cmd/NAME, inside the module
  [[ $prev == -o ]] && out=$arg
  prev=$arg
done
printf '#!/bin/sh\\n' >"$out" && chmod +x "$out"
"""


def _reset(tmp_path: Path) -> None:
    """A stand-in ``go`` with an empty log that holds each build until released."""
    fake = tmp_path / "fake-bin"
    fake.mkdir(exist_ok=True)
    (fake / "go").write_text(FAKE_GO, encoding="utf-8")
    (fake / "go").chmod(0o755)
    (tmp_path / "release").unlink(missing_ok=True)
    (tmp_path / "go.log").write_text("", encoding="utf-8")


def _tools(tmp_path: Path, *args: str, reset: bool = True) -> tuple[int, str, list[str], list[str]]:
    """Runs ``stack tools *args``: its exit status, stdout, stderr lines, and the
    packages go was asked to install. A build goes on only once a progress line came
    (or after 20 s, so that a script printing none still ends)."""
    if reset:
        _reset(tmp_path)
    fake = tmp_path / "fake-bin"
    release, log = tmp_path / "release", tmp_path / "go.log"
    env = {
        **os.environ,
        "PATH": f"{fake}:{os.environ['PATH']}",
        "OCITAG_TOOLS_DIR": str(tmp_path / "bin"),
        "OCITAG_TOOLS_PROGRESS_SECONDS": "1",
        "FAKE_GO_LOG": str(log),
        "FAKE_GO_RELEASE": str(release),
        "FAKE_GO_MODULE": str(tmp_path / "module"),
    }
    process = subprocess.Popen(
        [str(STACK), "tools", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert process.stdout is not None and process.stderr is not None
    lines: list[str] = []

    def read() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            lines.append(line.rstrip("\n"))
            if "still building" in line:
                release.touch()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    timer = threading.Timer(20, release.touch)
    timer.start()
    try:
        out = process.stdout.read()
        code = process.wait(60)
    finally:
        timer.cancel()
        release.touch()
    reader.join(10)
    return code, out, lines, log.read_text(encoding="utf-8").split()


def test_tools_builds_what_make_run_uses_and_says_how_it_goes(tmp_path: Path) -> None:
    code, out, said, installed = _tools(tmp_path)
    assert code == 0, said
    assert out.strip().splitlines()[-1] == str(tmp_path / "bin")
    assert [p.split("@")[0].rsplit("/", 1)[-1] for p in installed] == ["registry", "crane"]
    progress = [line for line in said if "still building registry" in line]
    assert progress, said
    assert "(go install github.com/distribution/distribution/v3/cmd/registry@" in progress[0]
    assert progress[0].endswith("s: compiling example.org/registry")


def test_tools_test_adds_what_only_the_tests_use(tmp_path: Path) -> None:
    assert _tools(tmp_path)[0] == 0
    code, _, said, installed = _tools(tmp_path, "--test")
    assert code == 0, said
    # Jaeger is built inside its module (its go.mod's replace directives)
    assert [p.split("@")[0].rsplit("/", 1)[-1] for p in installed] == ["oras", "jaeger"]
    assert installed[-1] == "./cmd/jaeger"
    assert os.access(tmp_path / "bin" / "jaeger", os.X_OK)
    assert (tmp_path / "bin" / ".jaeger.version").read_text(encoding="utf-8").strip() == (
        "github.com/jaegertracing/jaeger/cmd/jaeger@v1.75.0"
    )
    assert not (tmp_path / "bin" / ".jaeger-src").exists()  # the writable copy is removed
    assert _tools(tmp_path, "--bogus")[0] == 2


def test_tools_clients_leave_jaeger_to_tools_jaeger(tmp_path: Path) -> None:
    """make test builds the clients only; the tracing test's fixture builds Jaeger (or
    waits for the build .ci/run started), and nothing is built twice."""
    code, _, said, installed = _tools(tmp_path, "--clients")
    assert code == 0, said
    assert [p.split("@")[0].rsplit("/", 1)[-1] for p in installed] == ["registry", "crane", "oras"]
    assert not (tmp_path / "bin" / "jaeger").exists()
    code, _, said, installed = _tools(tmp_path, "--jaeger")
    assert code == 0, said
    assert installed == ["./cmd/jaeger"]
    assert _tools(tmp_path, "--test")[3] == []


def test_a_second_call_waits_for_the_build_of_the_same_tool(tmp_path: Path) -> None:
    """Two calls at once (.ci/run's background build and make's): one builds, the other
    waits on the tool's lock and then finds it built."""
    results: list[tuple[int, str, list[str], list[str]]] = []
    _reset(tmp_path)
    first = threading.Thread(
        target=lambda: results.append(_tools(tmp_path, "--deploy", reset=False))
    )
    first.start()
    second = _tools(tmp_path, "--deploy", reset=False)
    first.join(90)
    both = [results[0], second]
    assert [code for code, *_ in both] == [0, 0], [said for _, _, said, _ in both]
    # one go log for both: the tool was built once, and only one call said it built it
    assert [installed for *_, installed in both] == [["helm.sh/helm/v3/cmd/helm@v3.21.4"]] * 2
    building = [any("building helm" in line for line in said) for _, _, said, _ in both]
    assert sorted(building) == [False, True], both


def test_tools_deploy_builds_only_helm_once(tmp_path: Path) -> None:
    """deploy/check's helm: built alone (not the registry and crane), stamped with the
    pinned version, and not rebuilt while the stamp matches."""
    code, out, said, installed = _tools(tmp_path, "--deploy")
    assert code == 0, said
    assert installed == ["helm.sh/helm/v3/cmd/helm@v3.21.4"]
    assert (Path(out.strip()) / "helm").is_file()
    stamp = tmp_path / "bin" / ".helm.version"
    assert stamp.read_text(encoding="utf-8").strip() == installed[0]
    assert _tools(tmp_path, "--deploy")[3] == []
    stamp.write_text("helm.sh/helm/v3/cmd/helm@v3.0.0\n", encoding="utf-8")
    assert _tools(tmp_path, "--deploy")[3] == installed
