"""Names that changed: an old experiment, model or key on the command line is replaced by its new name, with a note,
so that commands and sweeps written for an earlier tincap still run."""

from __future__ import annotations

import sys

# config-group options that were renamed, per group
RENAMED_OPTIONS: dict[str, dict[str, str]] = {
    "experiment": {
        "shapes_caption": "shapes_attention",
        "tin30_finetune": "tin30_effnet_imagenet",
        "tin30_linear_probe": "tin30_effnet_imagenet_probe",
        "cifar10_finetune": "cifar10_cnn_tin30",
        "cifar10_finetune_frozen": "cifar10_cnn_tin30_probe",
        "cifar10_scratch": "cifar10_cnn",
        "cifar10_finetune_imagenet": "cifar10_effnet_imagenet",
        "flickr8k_imagenet": "flickr8k_attention_imagenet",
        "flickr8k_imagenet_scst": "flickr8k_attention_imagenet_scst",
    },
    "model": {"cnn_tin30": "cnn_scaled"},
}
# keys that moved, per entry config (conf/<name>.yaml)
RENAMED_KEYS: dict[str, dict[str, str]] = {
    "train": {
        "model.weights_path": "init.weights_path",
        "model.freeze_backbone": "init.freeze_backbone",
        "model.whiten_stem": "init.whiten_stem",
        "finetune_from": "init.weights_path",
        "encoder_from": "init.weights_path",
        "scst_from": "task.scst.init_from",
        "data.seed": "data.shapes_seed",
    },
    "eval": {"beam": "task.beam", "length_penalty": "task.length_penalty", "tta": "task.tta"},
}


def _renamed(arg: str, keys: dict[str, str]) -> str:
    """One command-line argument with its renamed key or options (prefixes +, ++ and ~ kept)."""
    if "=" not in arg or arg.startswith("-"):
        return arg
    key, value = arg.split("=", 1)
    prefix = key[: len(key) - len(key.lstrip("+~"))]
    name = key[len(prefix):]
    if name in keys:
        return f"{prefix}{keys[name]}={value}"
    options = RENAMED_OPTIONS.get(name)
    if options:
        return f"{key}=" + ",".join(options.get(v, v) for v in value.split(","))
    return arg


def rename_arguments(config_name: str, argv: list[str]) -> list[str]:
    """argv with every renamed option and key replaced, each change noted once on stderr."""
    keys = RENAMED_KEYS.get(config_name, {})
    out = [argv[0]]
    for arg in argv[1:]:
        new = _renamed(arg, keys)
        if new != arg:
            print(f"note: {arg} is now {new}", file=sys.stderr)
        out.append(new)
    return out
