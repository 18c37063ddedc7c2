"""python predict.py ckpt_path=... images=<image or folder>: the top-k classes of any images."""

from pathlib import Path

from tincap.commands import predict

if __name__ == "__main__":
    predict.main(Path(__file__).resolve().parent)
