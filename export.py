"""python export.py ckpt_path=... format=onnx|torchscript: the model as graph files plus model.json."""

from pathlib import Path

from tincap.commands import export

if __name__ == "__main__":
    export.main(Path(__file__).resolve().parent)
