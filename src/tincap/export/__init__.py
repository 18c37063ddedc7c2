"""Checkpoints as ONNX or TorchScript files for use outside tincap (export.py), and ONNX Runtime behind predict.py and
caption.py (backend=onnx).

Every export is a folder: the graph file(s) and model.json, the sidecar that says what they are and how to feed them.
"""
