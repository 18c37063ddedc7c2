"""The page's drop zone: its events get the uploaded file itself, and a file that is no image becomes a message."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr

from tincap.data.image_files import IMAGE_EXTENSIONS

KINDS = ", ".join(e.lstrip(".").upper() for e in IMAGE_EXTENSIONS if e not in (".jpeg", ".tif"))
ELEM_ID = "photo"
# small images (TinyImageNet's 64 px) fill the drop zone instead of sitting in its middle at their own size
CSS = f"#{ELEM_ID} img {{ width: 100%; height: 100%; object-fit: contain; }}"


def photo_input() -> gr.Image:
    """The page's image drop zone; bind its events with preprocess=False and read their value with `uploaded`."""
    return gr.Image(type="filepath", sources=["upload", "clipboard"], label="Image", height=320, elem_id=ELEM_ID)


@dataclass(frozen=True)
class Upload:
    """A file dropped on the page: where the server keeps it, and what the user's file was called."""

    path: Path
    name: str


def uploaded(value: dict[str, Any] | None) -> Upload | None:
    """The file behind a drop zone's raw value, bytes untouched (None once cleared).

    Raw, because Gradio's own preprocessing opens the file with Pillow first: a file that is no image would fail there
    with a bare "Error" on the page, and an image in another mode than RGB would be re-encoded.
    """
    if value is None:
        return None
    path = Path(value["path"])
    return Upload(path, value.get("orig_name") or path.name)


def unreadable(upload: Upload) -> gr.Error:
    """What the page shows for an upload that is not an image tincap can decode (the server goes on)."""
    return gr.Error(f"{upload.name} is not an image that can be read. Drop a {KINDS} file instead.",
                    title="Not an image", print_exception=False)
