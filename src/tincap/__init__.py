"""tincap: reproducible image classification and captioning experiments (Lightning + Hydra)."""

from tincap.runtime.resolvers import register as _register_resolvers

__version__ = "0.1.0"

_register_resolvers()
