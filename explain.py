"""python explain.py ckpt_path=... images=<image or folder> | split=val: Grad-CAM overlays."""

from pathlib import Path

from tincap.commands import explain

if __name__ == "__main__":
    explain.main(Path(__file__).resolve().parent)
