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


def start(script: str, *overrides: str, cwd: Path = REPO, env_extra: dict | None = None) -> subprocess.Popen:
    """An entry script started in its own process, left to run beside the test's other work (2 cores: two at once)."""
    return subprocess.Popen([sys.executable, str(REPO / script), *overrides], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, **(env_extra or {})})


def finish(proc: subprocess.Popen) -> subprocess.CompletedProcess:
    """What `run` gives, once a started script has ended."""
    stdout, stderr = proc.communicate(timeout=600)
    if proc.returncode != 0:
        raise AssertionError(f"{proc.args[1:]} failed:\n{stdout[-3000:]}\n{stderr[-3000:]}")
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


def stop(proc: subprocess.Popen) -> None:
    """Kill a started script the test no longer waits for (a server, or one left behind by a failure)."""
    if proc.poll() is None:
        proc.kill()
        proc.communicate()
