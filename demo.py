"""python demo.py ckpt_path=... [examples=<folder>]: a local web page for a checkpoint."""

from pathlib import Path

from tincap.commands import demo

if __name__ == "__main__":
    demo.main(Path(__file__).resolve().parent)
