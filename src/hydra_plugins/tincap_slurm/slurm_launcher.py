"""hydra/launcher=slurm: hydra-submitit-launcher's SLURM launcher, whose requeued jobs resume their own run.

Preemption is submitit's: its signal handler calls the launcher's `checkpoint()` (hydra-submitit-launcher's: the same
job again) and requeues the job with `scontrol requeue`. SLURM restarts a requeued job with SLURM_RESTART_COUNT set;
this launcher then runs it as `resume=<its run dir>` (the run's `checkpoints/last.ckpt`, the last finished epoch,
written atomically), so it goes on in the same run directory and TensorBoard run. The same happens when an
administrator or a preempting job requeues it (`scontrol requeue`, PreemptMode=REQUEUE), which sends no signal that
submitit handles. A job requeued before its first epoch ended has no last.ckpt and starts again in its directory.
"""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, setup_globals
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher
from omegaconf import open_dict


def restart_count() -> int:
    """How many times SLURM has restarted this job (0 for its first run, and outside SLURM)."""
    return int(os.environ.get("SLURM_RESTART_COUNT") or 0)


class ResumingSlurmLauncher(SlurmLauncher):
    """One SLURM job per sweep job (hydra-submitit-launcher); a restarted job resumes its run directory."""

    def run_dir(self, sweep_overrides: list[str], job_num: int, singleton_state: dict[type, Singleton]) -> Path:
        """The directory this sweep job writes to: hydra.sweep.dir/hydra.sweep.subdir, as run_job computes it."""
        assert self.hydra_context is not None and self.config is not None
        Singleton.set_state(singleton_state)
        setup_globals()
        config = self.hydra_context.config_loader.load_sweep_config(self.config, list(sweep_overrides))
        with open_dict(config.hydra.job):
            config.hydra.job.num = job_num
        HydraConfig.instance().set_config(config)
        return Path(str(config.hydra.sweep.dir), str(config.hydra.sweep.subdir)).resolve()

    def __call__(self, sweep_overrides: list[str], job_dir_key: str, job_num: int, job_id: str,
                 singleton_state: dict[type, Singleton]) -> JobReturn:
        overrides = list(sweep_overrides)
        rank = int(os.environ.get("SLURM_PROCID") or 0)
        if rank > 0:
            # the other tasks of a multi-process job log beside rank 0 and leave the .hydra record to it, as
            # Lightning's own DDP launcher does for the processes it starts
            overrides += [f"hydra.job.name={self.config.hydra.job.name}_ddp_process_{rank}", "hydra.output_subdir=null"]
        if restart_count() > 0:
            run_dir = self.run_dir(overrides, job_num, singleton_state)
            if (run_dir / "checkpoints" / "last.ckpt").is_file():
                overrides.append(f"resume={run_dir}")
                if rank == 0:  # the resumed invocation is recorded beside the original record, as resume= does
                    stamp = datetime.now().strftime("%Y-%m-%d_%H-%M-%S_%f")
                    overrides.append(f"hydra.output_subdir=.hydra/requeued_{restart_count()}_{stamp}")
        return super().__call__(overrides, job_dir_key, job_num, job_id, singleton_state)
