"""python report.py DIR [DIR ...] [--out DIR] [--metric val/acc]: compare finished runs in one table and two figures."""

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split(":", 1)[1].strip())
    parser.add_argument("dirs", nargs="+", help="run or sweep directories (searched recursively for runs)")
    parser.add_argument("--out", default=None, help="where to write the report (default: the first DIR)")
    parser.add_argument("--metric", default=None, help="metric to rank by (default: the runs' optimized_metric)")
    args = parser.parse_args(argv)

    from tincap.evaluation.report import write_report

    try:
        out, notes = write_report(args.dirs, out=args.out, metric=args.metric)
    except (FileNotFoundError, ValueError) as err:
        print(err, file=sys.stderr)
        return 1
    for note in notes:
        print(f"note: {note}")
    written = ("report.md", "report.csv", "curves.png", "accuracy_vs_params.png")
    print("Report: " + " | ".join(str(out / name) for name in written))
    return 0


if __name__ == "__main__":
    sys.exit(main())
