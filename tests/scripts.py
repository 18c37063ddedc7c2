"""Run the entry scripts as a user does (a fresh process each) and read the closing line they print."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run(script: str, *overrides: str, cwd: Path = REPO, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, **(env_extra or {})}
    proc = subprocess.run([sys.executable, str(REPO / script), *overrides], cwd=cwd, capture_output=True,
                          text=True, env=env, timeout=600)
    if proc.returncode != 0:
        raise AssertionError(f"{script} {overrides} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def closing(proc: subprocess.CompletedProcess) -> dict[str, str]:
    last = proc.stdout.strip().splitlines()[-1]
    found = dict(re.findall(r"(Run dir|best checkpoint): (\S+)", last))
    assert "Run dir" in found, last
    return found
