"""``make install``'s editable install is quiet: on the flat layout setuptools installed
an import finder and said so in an "Editable installation" warning block framed in
``!!``, which pip (26 and later) shows even with ``-q``, on every first ``make run``.
The real build, as pip runs it (isolated, the pinned build backend), into a scratch
directory (``--target``: the running venv's own install is left alone)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.helpers.services import REPO


def test_the_editable_install_prints_no_warning_block(tmp_path: Path) -> None:
    pip = [sys.executable, "-m", "pip", "install", "--no-deps", "--no-input", "--quiet"]
    done = subprocess.run(
        [*pip, "--editable", str(REPO), "--target", str(tmp_path / "site")],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    said = done.stdout + done.stderr
    assert done.returncode == 0, said
    assert "Editable install" not in said, said
    assert "!!" not in said, said
    # a plain path entry for the repository, not an import finder
    (pth,) = (tmp_path / "site").glob("__editable__.ocitag_worker-*.pth")
    assert pth.read_text(encoding="utf-8").strip() == str(REPO)
