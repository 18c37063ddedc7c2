"""What both pages share: the frame with its heading, how an image reaches the model (upload or example), serving."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import gradio as gr

from tincap.demo.photo_input import CSS


def page(title: str, about: str) -> gr.Blocks:
    """An empty page (enter it with `with`) headed by its title and what it does; it reports nothing to Gradio, and
    the copies of uploads and results it keeps are deleted after an hour, and when it stops."""
    blocks = gr.Blocks(title=title, analytics_enabled=False, delete_cache=(3600, 3600))
    with blocks:
        gr.Markdown(f"## {title}\n{about}", elem_id="about")
    return blocks


def connect(photo: gr.Image, outputs: Sequence[gr.Component], fn: Callable, examples: list[Path], api_name: str) -> None:
    """Run `fn` on the drop zone's raw value (see photo_input.uploaded) whenever it changes: an upload, a clicked
    example (thumbnails of `examples`, where given), or None when cleared."""
    photo.change(fn, photo, list(outputs), preprocess=False, api_name=api_name)
    if examples:
        gr.Examples([[str(f)] for f in examples], inputs=photo, label=f"Examples ({len(examples)})",
                    cache_examples=False, examples_per_page=12, elem_id="examples")


def launch(blocks: gr.Blocks, host: str, port: int, share: bool) -> tuple[str, str | None]:
    """Serve the page from a background thread: its local URL, and the public one where `share` made one."""
    _, local_url, share_url = blocks.launch(server_name=host, server_port=port, share=share, prevent_thread_lock=True,
                                            quiet=True, show_error=True, ssr_mode=False, run_history=False, css=CSS)
    return local_url.rstrip("/"), share_url
