"""Every README example that runs cohortflow works as written, after the demo, from the project's folder.

The README's shell blocks are run verbatim with bash (``-e``: the first failing
line fails the test) in a folder laid out like the repository after
``scripts/demo.sh`` (``.venv`` and ``demo/``; the demo is a small one). Blocks
with ``...`` placeholders (deployment) or that set up the machine
(``scripts/...``) are not run here; the commands they show are covered by
their own tests.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _blocks() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```bash\n(.*?)```", text, re.S)
    return [b for b in blocks if re.search(r"^cohortflow ", b, re.M) and "..." not in b and "scripts/" not in b]


def test_the_readme_has_runnable_examples():
    blocks = _blocks()
    assert blocks, "no runnable example found in README.md"
    assert any("cohortflow render active_users_daily" in b for b in blocks)
    assert any("cohortflow report" in b for b in blocks)


@pytest.mark.slow
def test_readme_examples_work_as_written(tmp_path):
    venv = Path(sys.executable).parent.parent
    (tmp_path / ".venv").symlink_to(venv)
    demo = subprocess.run(
        [str(venv / "bin" / "cohortflow"), "-q", "demo", "--dir", "demo", "--users", "150"],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
    )
    assert demo.returncode == 0, demo.stderr
    for block in _blocks():
        env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
        done = subprocess.run(["bash", "-e", "-c", block], cwd=tmp_path, capture_output=True, text=True, env=env, timeout=600)
        assert done.returncode == 0, f"README example failed:\n{block}\n--- stderr:\n{done.stderr[-3000:]}"
        assert "error:" not in done.stderr
    assert (tmp_path / "demo" / "target" / "reports" / "2026-11-14.html").is_file()
