"""When a run began, what machine it runs on, and how much time a SLURM job has left: what a time budget is measured
against and reported with."""

from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path

import torch

from tincap.runtime.resolvers import GPU_ACCELERATORS, cpu_has_native_bf16

_IMPORTED = time.time()
_claimed = False


def process_started() -> float:
    """When this process started (seconds since the epoch, from Linux's /proc), else when tincap was imported."""
    try:
        stat = Path("/proc/self/stat").read_text()
        ticks = int(stat.rsplit(")", 1)[1].split()[19])  # field 22, starttime, in clock ticks since boot
        boot = next(float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime"))
        return min(boot + ticks / os.sysconf("SC_CLK_TCK"), time.time())
    except (OSError, ValueError, IndexError, StopIteration):
        return _IMPORTED


def run_started() -> float:
    """When this run began: the process's launch for its first run, now for each later job of a sweep in the same
    process (a sweep's budget is each job's own)."""
    global _claimed
    if _claimed:
        return time.time()
    _claimed = True
    return process_started()


def cpu_model() -> str:
    """The CPU's model name, as /proc/cpuinfo (or the platform) gives it."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return re.sub(r"\s+", " ", line.split(":", 1)[1]).strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def machine(accelerator: str = "cpu") -> str:
    """The machine in one line, as results are reported: the GPU, or the CPU with its cores and its bf16."""
    if str(accelerator) in GPU_ACCELERATORS and torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)} GPU x{torch.cuda.device_count()}"
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    bf16 = "bf16 native" if cpu_has_native_bf16() else "bf16 emulated"
    return f"{cpu_model()}, {cores} cores, {bf16}"


def slurm_time_left() -> tuple[str, float] | None:
    """(job id, seconds left) inside a SLURM job with a time limit; None outside SLURM or without a limit."""
    job = os.environ.get("SLURM_JOB_ID")
    if not job:
        return None
    end = os.environ.get("SLURM_JOB_END_TIME")  # Slurm >= 23.02 exports it to the job
    if end and end.isdigit():
        return job, float(end) - time.time()
    try:
        left = subprocess.run(["squeue", "-h", "-j", job, "-o", "%L"], capture_output=True, text=True,
                              timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    seconds = slurm_duration(left)
    return None if seconds is None else (job, seconds)


def slurm_duration(text: str) -> float | None:
    """Seconds in SLURM's time format ([D-]HH:MM:SS, MM:SS); None for UNLIMITED, NOT_SET or anything else."""
    match = re.fullmatch(r"(?:(\d+)-)?(?:(\d+):)?(\d+):(\d+)", text.strip())
    if not match:
        return None
    days, hours, minutes, seconds = (int(g or 0) for g in match.groups())
    return float(((days * 24 + hours) * 60 + minutes) * 60 + seconds)
