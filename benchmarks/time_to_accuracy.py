"""Seconds from a run's launch until its validation top-1 first reached a target, read from its TensorBoard events.

    python benchmarks/time_to_accuracy.py <run_dir> --start <unix time of launch> [--target 0.72] [--tag val/acc]

Prints one JSON object: the first epoch at or above the target and the seconds to it (null when never reached), the
best value, and the total seconds to the run's last event. Never fails on a timing.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator


def scalar_events(run_dir: Path, tag: str) -> list[tuple[float, int, float]]:
    """(wall time, step, value) of every `tag` event of the run, oldest first."""
    events = []
    for directory in sorted({p.parent for p in run_dir.rglob("events.out.tfevents.*")}):
        acc = EventAccumulator(str(directory), size_guidance={"scalars": 0})
        acc.Reload()
        if tag in acc.Tags().get("scalars", []):
            events += [(e.wall_time, e.step, float(e.value)) for e in acc.Scalars(tag)]
    return sorted(events)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--start", type=float, required=True, help="unix time the command was launched")
    parser.add_argument("--target", type=float, default=0.72)
    parser.add_argument("--tag", default="val/acc")
    args = parser.parse_args()
    events = scalar_events(args.run_dir, args.tag)
    epochs = {step: int(value) for _, step, value in scalar_events(args.run_dir, "epoch")}
    first = next(((t, step, v) for t, step, v in events if v >= args.target), None)
    print(json.dumps({
        "name": "gpu/time_to_accuracy", "tag": args.tag, "target": args.target,
        "seconds": None if first is None else round(first[0] - args.start, 1),
        "epoch": None if first is None else epochs.get(first[1], first[1]) + 1,
        "best": max((v for _, _, v in events), default=None),
        "total_seconds": round(events[-1][0] - args.start, 1) if events else None,
        "run_dir": str(args.run_dir),
    }))


if __name__ == "__main__":
    main()
