"""A trained model run on image files, in PyTorch (the checkpoint) or ONNX Runtime (its export, `tincap.export`):
what predict.py, caption.py and demo.py call, behind the protocols of `backend`."""
