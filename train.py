"""python train.py [group=option ...] [key=value ...]: one training run (a sweep with -m)."""

from pathlib import Path

from tincap.commands import train

if __name__ == "__main__":
    train.main(Path(__file__).resolve().parent)
