"""python eval.py ckpt_path=... [data=... data.root=...]: score a trained checkpoint."""

from pathlib import Path

from tincap.commands import eval

if __name__ == "__main__":
    eval.main(Path(__file__).resolve().parent)
