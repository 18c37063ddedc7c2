"""The captioner's page: a dropped image's caption, and for an attention decoder where it looked for each word."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
from omegaconf import DictConfig

from tincap.data.cache import decode_files
from tincap.demo.attention import attention_overlay, word_attention
from tincap.demo.layout import connect, page
from tincap.demo.photo_input import photo_input, unreadable, uploaded
from tincap.inference.torch_backend import caption_files
from tincap.runtime.errors import InvalidInput
from tincap.tasks.captioner import Captioner

STRIP_SIZE = 160  # px of each word's overlay in the strip
STRIP_LABEL = "Where each word looked: red where its attention weighs most; % = its largest weight on one region"


@dataclass
class CaptionerDemo:
    """One image in, its caption (caption.py's code path) and one overlay per word out."""

    task: Captioner
    beam: int

    def __call__(self, value: dict[str, Any] | None) -> tuple[str, list[tuple[np.ndarray, str]]]:
        upload = uploaded(value)
        if upload is None:  # the image was cleared
            return "", []
        try:
            [(_, caption)] = caption_files(self.task, [upload.path], self.beam, batch_size=1)
        except InvalidInput:
            raise unreadable(upload) from None
        if not self.task.decoder.attends:
            return caption, []
        pixels = decode_files([upload.path], self.task.data_info["image_size"]).images[0]
        return caption, [(attention_overlay(pixels, weights, STRIP_SIZE), f"{word} {weights.max():.0%}")
                         for word, weights in word_attention(self.task, pixels, caption)]


def build(task: Captioner, cfg: DictConfig, examples: list[Path]) -> gr.Blocks:
    """The page for a captioner checkpoint; `beam` sets its search, as caption.py's beam= does."""
    beam = int(cfg.beam if cfg.beam is not None else task.hparams.beam_size)
    if beam < 1:
        raise InvalidInput(f"beam={cfg.beam}: expected a beam width of 1 (greedy) or more")
    demo = CaptionerDemo(task, beam)
    decoder = task.hparams.decoder["_target_"].rsplit(".", 1)[-1]
    shown = "and where the decoder looked for each word" if task.decoder.attends else "(this decoder has no attention to show)"
    about = (f"A captioner ({decoder}, {len(task.vocab)} words, {task.data_info['image_size']} px). Drop an "
             f"image to see its caption (beam {beam}) {shown}.")
    with page("tincap captioner", about) as blocks:
        with gr.Row():
            with gr.Column():
                photo = photo_input()
            with gr.Column():
                caption = gr.Textbox(label=f"Caption (beam {beam})", interactive=False, elem_id="caption")
                strip = gr.Gallery(label=STRIP_LABEL, columns=4, fit_columns=False,
                                   height=300, object_fit="contain", elem_id="attention", visible=task.decoder.attends,
                                   format="png", buttons=["download", "fullscreen"])
        connect(photo, [caption, strip], demo, examples, api_name="caption")
    return blocks
