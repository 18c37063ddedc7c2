"""python report.py DIR [DIR ...]: finished runs compared in one table and two figures."""

from pathlib import Path

from tincap.commands import report

if __name__ == "__main__":
    report.main(Path(__file__).resolve().parent)
