"""Checks of the data.* values every datamodule takes, made when it is built rather than deep inside a loader."""

from __future__ import annotations

import numbers

from tincap.runtime.errors import InvalidInput


def check_setting(key: str, value: object, valid: bool, expected: str, example: object) -> None:
    """Refuse an impossible data.* value before any image is read, naming the override that fixes it."""
    if not valid:
        shown = "null" if value is None else value
        raise InvalidInput(f"data.{key}={shown}: expected {expected}. Set e.g. data.{key}={example}")


def is_count(value: object, least: int = 1) -> bool:
    """An integer >= least; True and 1.0 are not counts, so a mistyped YAML value is refused, not coerced."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= least


def check_loader_settings(image_size: object, batch_size: object, eval_batch_size: object, num_workers: object) -> None:
    """The data.* values every datamodule takes."""
    check_setting("image_size", image_size, image_size is None or is_count(image_size),
                  "a side in pixels >= 1, or null for the images' own size (the model's for pretrained ones)", 64)
    check_setting("batch_size", batch_size, is_count(batch_size), "an integer >= 1", 128)
    check_setting("eval_batch_size", eval_batch_size, eval_batch_size is None or is_count(eval_batch_size),
                  "an integer >= 1, or null for data.batch_size", 256)
    check_setting("num_workers", num_workers, is_count(num_workers, 0), "an integer >= 0", 0)


def check_placement(augment_on: object, on_device: object, augment: dict) -> None:
    """data.augment_on and data.on_device, and the augmentations that only the host can run."""
    check_setting("augment_on", augment_on, augment_on in ("host", "device"), "host or device", "device")
    check_setting("on_device", on_device, isinstance(on_device, bool), "true or false", "true")
    if on_device and augment_on != "device":
        raise InvalidInput(f"data.on_device=true with data.augment_on={augment_on}: a split kept on the device is "
                           "augmented there, so on_device needs augment_on=device. Set data.augment_on=device, or "
                           "data.on_device=false")
    if augment_on == "device" and augment.get("trivial_augment"):
        raise InvalidInput("data.augment.trivial_augment=true with data.augment_on=device: TrivialAugment runs image "
                           "by image on the host only. Set data.augment.trivial_augment=false, or data.augment_on=host")
