"""caption.py backend=onnx: an exported captioner run by ONNX Runtime, decoded by tincap's own greedy and beam search
(`tincap.models.caption_search`) over the decoder-step graph."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from tincap.data.vocab import Vocabulary
from tincap.export.sidecar import Export
from tincap.inference.backend import caption_images
from tincap.models.caption_decoders import select_batch
from tincap.models.caption_search import beam_search, greedy_decode


class OnnxDecoderSteps:
    """`DecoderSteps` over decoder_step.onnx: torch tensors in and out, the state a tuple (batch on dim 1).
    `last_alpha` (N, L) holds the latest step's attention weights when the decoder attends, as in PyTorch."""

    def __init__(self, session: Any) -> None:
        self.session = session
        self.inputs = {i.name for i in session.get_inputs()}
        self.attends = "attention" in {o.name for o in session.get_outputs()}
        self.last_alpha: Tensor | None = None

    def step(self, prev_tokens: Tensor, state: tuple[Tensor, ...], image: Tensor) -> tuple[Tensor, tuple[Tensor, ...]]:
        feeds = {"prev_tokens": prev_tokens, "features": image, **{f"state_{i}": s for i, s in enumerate(state)}}
        arrays = {k: np.ascontiguousarray(v.numpy()) for k, v in feeds.items() if k in self.inputs}
        log_probs, *rest = (torch.from_numpy(out) for out in self.session.run(None, arrays))
        if self.attends:
            self.last_alpha = rest.pop()  # (N, L)
        return log_probs, tuple(rest)  # (N, V), the next state

    def reorder_state(self, state: tuple[Tensor, ...], index: Tensor) -> tuple[Tensor, ...]:
        return select_batch(state, index)


class OnnxCaptioner:
    """encoder.onnx and decoder_step.onnx in ONNX Runtime sessions, with the vocabulary and decoding settings of
    model.json."""

    def __init__(self, export: Export, encoder: Any, step: Any) -> None:
        meta = export.meta
        self.export = export
        self.encoder = encoder
        self.steps = OnnxDecoderSteps(step)
        self.vocab = Vocabulary(meta["vocabulary"])
        self.beam_size = int(meta["beam_size"])
        self.max_len = int(meta["max_len"])
        self.length_penalty = float(meta["length_penalty"])
        ids = meta["special_ids"]
        self.ids = {"bos_id": ids["bos"], "eos_id": ids["eos"], "pad_id": ids["pad"],
                    "unk_id": ids["unk"] if meta["suppress_unk"] else None}
        self.source = str(meta.get("checkpoint") or export.folder)

    def generate(self, pixels: Tensor, beam: int) -> Tensor:
        """Token ids (N, <= max_len) of the best caption of each uint8 image (N, 3, H, W): greedy for beam 1."""
        features, *state = (torch.from_numpy(out) for out in self.encoder.run(None, {"image": pixels.numpy()}))
        if beam <= 1:
            return greedy_decode(self.steps, features, self.max_len, **self.ids, state=tuple(state))
        return beam_search(self.steps, features, beam, self.max_len, self.length_penalty, **self.ids,
                           state=tuple(state))

    def captions(self, pixels: Tensor, beam: int) -> list[str]:
        return [self.vocab.decode(row.tolist()) for row in self.generate(pixels, beam)]

    def caption(self, files: list[Path], beam: int, batch_size: int) -> list[tuple[Path, str]]:
        return caption_images(files, self.export.image_size, lambda pixels: self.captions(pixels, beam), batch_size)
