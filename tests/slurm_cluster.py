"""A real one-node SLURM cluster on this machine, for the tests and by hand: munged, MariaDB + slurmdbd (so that
`sacct` has job lines), slurmctld and slurmd, with every config, state and log file in one folder.

    python tests/slurm_cluster.py up /tmp/tincap-slurm      # prints the `export SLURM_CONF=...` line to use
    python tests/slurm_cluster.py down /tmp/tincap-slurm

Needs root (the daemons run as root) and Debian's packages: `apt-get install slurm-wlm slurmdbd munge mariadb-server`.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

PARTITION = "tincap"  # not the default partition: jobs reach it only through hydra.launcher.partition
CLUSTER = "tincap"
PROGRAMS = ("munged", "mariadbd", "mariadb-install-db", "slurmdbd", "slurmctld", "slurmd", "sbatch", "srun",
            "sacct", "scontrol", "sinfo")
# the order the daemons start in; they stop in the reverse order
DAEMONS = ("munged", "mariadbd", "slurmdbd", "slurmctld", "slurmd")
APT_PACKAGES = "slurm-wlm slurmdbd munge mariadb-server"


@dataclass(frozen=True)
class Cluster:
    """A running cluster: its folder, and the environment that points SLURM's commands at it."""

    folder: Path
    partition: str = PARTITION

    @property
    def conf(self) -> Path:
        return self.folder / "slurm.conf"

    @property
    def env(self) -> dict[str, str]:
        return {"SLURM_CONF": str(self.conf)}

    def command(self, *args: str, timeout: float = 60) -> str:
        """Run a SLURM client command (sacct, scontrol, ...) against this cluster; its stdout."""
        proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout, env={**os.environ, **self.env},
                              check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()}")
        return proc.stdout


def unavailable_reason() -> str | None:
    """Why a cluster cannot be started here (None when it can): the daemons run as root from Debian's packages."""
    missing = [p for p in PROGRAMS if shutil.which(p) is None and not Path("/usr/sbin", p).exists()]
    if missing:
        return f"SLURM programs not installed: {', '.join(missing)} (apt-get install {APT_PACKAGES})"
    if os.geteuid() != 0:
        return "the SLURM test cluster runs its daemons as root; run the slurm tests as root"
    return None


def _program(name: str) -> str:
    return shutil.which(name) or str(Path("/usr/sbin", name))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _node_line() -> str:
    """This machine as slurmd sees it: its real hostname, CPUs, sockets/cores/threads and memory."""
    out = subprocess.run([_program("slurmd"), "-C"], capture_output=True, text=True, check=True).stdout
    line = next(ln for ln in out.splitlines() if ln.startswith("NodeName="))
    return f"{line} NodeAddr=127.0.0.1 State=UNKNOWN"


def _write(path: Path, text: str, mode: int = 0o644) -> None:
    path.write_text(text)
    path.chmod(mode)


def write_configs(folder: Path, partition: str = PARTITION) -> dict[str, int]:
    """slurm.conf and slurmdbd.conf for one node on fresh ports, with state and logs inside `folder`; the ports."""
    d = folder
    ports = {name: _free_port() for name in ("slurmctld", "slurmd", "slurmdbd", "mariadb")}
    host = socket.gethostname().split(".")[0]
    auth = f"AuthType=auth/munge\nAuthInfo=socket={d}/munge.socket\n"
    _write(d / "slurm.conf", f"""\
ClusterName={CLUSTER}
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={ports['slurmctld']}
SlurmdPort={ports['slurmd']}
SlurmUser=root
SlurmdUser=root
{auth}CredType=cred/munge
StateSaveLocation={d}/state
SlurmdSpoolDir={d}/spool
SlurmctldPidFile={d}/slurmctld.pid
SlurmdPidFile={d}/slurmd.pid
SlurmctldLogFile={d}/log/slurmctld.log
SlurmdLogFile={d}/log/slurmd.log
# no cgroups in a container: processes tracked through /proc, tasks not bound
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
ReturnToService=2
KillWait=5
MinJobAge=600
MailProg=/bin/true
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort={ports['slurmdbd']}
# the munge socket for talking to slurmdbd (AuthInfo covers only slurmctld and slurmd)
AccountingStoragePass={d}/munge.socket
JobCompType=jobcomp/none
{_node_line()}
PartitionName={partition} Nodes=ALL Default=NO MaxTime=INFINITE State=UP
""")
    # slurmdbd reads slurmdbd.conf beside slurm.conf and refuses one that others can read
    _write(d / "slurmdbd.conf", f"""\
{auth}DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort={ports['slurmdbd']}
SlurmUser=root
PidFile={d}/slurmdbd.pid
LogFile={d}/log/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort={ports['mariadb']}
StorageUser=root
StorageLoc=slurm_acct_db
""", mode=0o600)
    return ports


def _wait(what: str, ready, folder: Path, log: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            return
        time.sleep(0.3)
    tail = (folder / "log" / log).read_text()[-2000:] if (folder / "log" / log).is_file() else "(no log)"
    raise RuntimeError(f"SLURM test cluster: {what} did not come up within {timeout:.0f} s; {log}:\n{tail}")


def _ok(*args: str, env: dict[str, str]) -> bool:
    return subprocess.run(args, capture_output=True, env={**os.environ, **env}, timeout=30, check=False).returncode == 0


def start(folder: Path, partition: str = PARTITION) -> Cluster:
    """Start munged, MariaDB, slurmdbd, slurmctld and slurmd in `folder` and wait until the node is idle."""
    reason = unavailable_reason()
    if reason:
        raise RuntimeError(reason)
    folder = Path(folder).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o755)  # munged refuses a socket folder that others can write to
    for sub in ("state", "spool", "log", "mysql"):
        (folder / sub).mkdir(exist_ok=True)
    ports = write_configs(folder, partition)
    cluster = Cluster(folder, partition)
    env = cluster.env
    try:
        key = folder / "munge.key"
        if not key.exists():
            key.write_bytes(os.urandom(1024))
            key.chmod(0o400)
        subprocess.run([_program("munged"), "--force", f"--key-file={key}", f"--socket={folder}/munge.socket",
                        f"--pid-file={folder}/munged.pid", f"--log-file={folder}/log/munged.log",
                        f"--seed-file={folder}/munged.seed"], check=True, capture_output=True)
        _wait("munged", lambda: (folder / "munged.pid").is_file(), folder, "munged.log")

        if not (folder / "mysql" / "mysql").is_dir():
            subprocess.run([_program("mariadb-install-db"), "--no-defaults", f"--datadir={folder}/mysql", "--user=root",
                            "--auth-root-authentication-method=normal", "--skip-test-db"],
                           check=True, capture_output=True, timeout=120)
        # setsid --fork: the server is nobody's child here, as the other daemons (which fork themselves)
        subprocess.run(["setsid", "--fork", _program("mariadbd"), "--no-defaults", f"--datadir={folder}/mysql", "--user=root",
                          f"--socket={folder}/mysql.socket", f"--port={ports['mariadb']}", "--bind-address=127.0.0.1",
                          f"--pid-file={folder}/mariadbd.pid", f"--log-error={folder}/log/mariadb.log",
                        "--innodb-buffer-pool-size=64M"], check=True, stdin=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait("MariaDB", lambda: (folder / "mariadbd.pid").is_file() and (folder / "mysql.socket").exists(),
              folder, "mariadb.log")

        subprocess.run([_program("slurmdbd")], check=True, capture_output=True, env={**os.environ, **env})
        _wait("slurmdbd", lambda: _ok("sacctmgr", "-n", "list", "cluster", env=env), folder, "slurmdbd.log")
        subprocess.run([_program("slurmctld")], check=True, capture_output=True, env={**os.environ, **env})
        _wait("slurmctld", lambda: _ok("scontrol", "ping", env=env), folder, "slurmctld.log")
        subprocess.run([_program("slurmd")], check=True, capture_output=True, env={**os.environ, **env})

        def node_idle() -> bool:
            out = subprocess.run(["sinfo", "-h", "-p", partition, "-o", "%T"], capture_output=True, text=True,
                                 env={**os.environ, **env}, check=False).stdout.strip()
            return out == "idle"

        _wait("the node (slurmd)", node_idle, folder, "slurmd.log")
        # slurmctld registers the cluster in the accounting database; sacct shows nothing until it has
        _wait("the cluster's accounting", lambda: CLUSTER in cluster.command("sacctmgr", "-n", "-P", "list", "cluster"),
              folder, "slurmctld.log")
    except BaseException:
        stop(folder)
        raise
    return cluster


def stop(folder: Path) -> None:
    """Stop every daemon of the cluster in `folder` (newest first), waiting for each to exit."""
    folder = Path(folder)
    for name in reversed(DAEMONS):
        pid_file = folder / f"{name}.pid"
        if not pid_file.is_file():
            continue
        try:
            pid = int(pid_file.read_text().split()[0])
            os.kill(pid, signal.SIGTERM)
        except (ValueError, IndexError, ProcessLookupError):
            continue
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.2)
        else:
            os.kill(pid, signal.SIGKILL)
        pid_file.unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=("up", "down"))
    parser.add_argument("folder", type=Path, help="where configs, state and logs go (created if needed)")
    parser.add_argument("--partition", default=PARTITION)
    args = parser.parse_args(argv)
    if args.action == "down":
        stop(args.folder)
        return 0
    try:
        cluster = start(args.folder, args.partition)
    except RuntimeError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1
    print(f"export SLURM_CONF={cluster.conf}   # partition: {cluster.partition}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
