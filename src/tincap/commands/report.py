"""`python report.py DIR [DIR ...]`: finished runs compared in one table (report.md, report.csv) and two figures."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tincap.evaluation.report import write_report

WRITTEN = ("report.md", "report.csv", "curves.png", "accuracy_vs_params.png")


def report(argv: list[str]) -> int:
    """Parse the command line, write the report, print where it is; the exit status."""
    parser = argparse.ArgumentParser(prog="report.py", description=__doc__.split(":", 1)[1].strip())
    parser.add_argument("dirs", nargs="+", help="run or sweep directories (searched recursively for runs)")
    parser.add_argument("--out", default=None, help="where to write the report (default: the first DIR)")
    parser.add_argument("--metric", default=None, help="metric to rank by (default: the runs' optimized_metric)")
    args = parser.parse_args(argv)
    try:
        out, notes = write_report(args.dirs, out=args.out, metric=args.metric)
    except (FileNotFoundError, ValueError) as err:
        print(err, file=sys.stderr)
        return 1
    for note in notes:
        print(f"note: {note}")
    print("Report: " + " | ".join(str(out / name) for name in WRITTEN))
    return 0


def main(project_root: Path) -> None:
    """report.py reads run directories only: no config to compose."""
    sys.exit(report(sys.argv[1:]))
