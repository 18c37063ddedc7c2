"""tincap: reproducible image classification and captioning experiments (Lightning + Hydra)."""

__version__ = "0.1.0"
