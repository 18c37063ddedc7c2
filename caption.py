"""python caption.py ckpt_path=... images=<image or folder> [--beam N]: one caption per image."""

from pathlib import Path

from tincap.commands import caption

if __name__ == "__main__":
    caption.main(Path(__file__).resolve().parent)
