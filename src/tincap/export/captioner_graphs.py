"""A captioner as two graphs: the encoder (image -> what the decoder reads and its first state) and one decoder step
(previous tokens and state -> log-probabilities and the next state), so any runtime can drive tincap's search."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from tincap.export.graph import BATCH, Graph, Normalise
from tincap.models.caption_decoders import CaptionDecoder, State
from tincap.models.caption_encoder import CaptionEncoder
from tincap.tasks.captioner import Captioner


def as_tuple(state: State) -> tuple[Tensor, ...]:
    return (state,) if isinstance(state, Tensor) else tuple(state)


class EncoderGraph(nn.Module):
    """uint8 image (N, 3, H, W) -> the decoder's image input ((N, L, C) map or (N, D) vector) and its first state."""

    def __init__(self, encoder: CaptionEncoder, decoder: CaptionDecoder, mean: list[float], std: list[float]) -> None:
        super().__init__()
        self.normalise = Normalise(mean, std)
        self.encoder = encoder
        self.decoder = decoder

    def forward(self, image: Tensor) -> tuple[Tensor, ...]:
        features = self.encoder(self.normalise(image))  # (N, L, C) or (N, D)
        return (features, *as_tuple(self.decoder.init_state(features)))  # state tensors: batch on dim 1


class DecoderStepGraph(nn.Module):
    """(prev_tokens (N,), image, *state) -> (log_probs (N, V), *next state[, attention (N, L)]).

    `tuple_state` says whether the decoder takes its state as a tuple (LSTM: h, c) or one tensor (GRU, RNN);
    `attention` whether the step leaves its weights in `last_alpha` (attention decoders)."""

    def __init__(self, decoder: CaptionDecoder, tuple_state: bool, attention: bool) -> None:
        super().__init__()
        self.decoder = decoder
        self.tuple_state = tuple_state
        self.attention = attention

    def forward(self, prev_tokens: Tensor, image: Tensor, *state: Tensor) -> tuple[Tensor, ...]:
        log_probs, state = self.decoder.step(prev_tokens, state if self.tuple_state else state[0], image)
        extra = (self.decoder.last_alpha,) if self.attention else ()
        return (log_probs, *as_tuple(state), *extra)


def captioner_graphs(task: Captioner) -> list[Graph]:
    """The encoder and decoder-step graphs, traced with a two-image batch."""
    info = task.hparams.data_info
    size = int(info["image_size"])
    encoder = EncoderGraph(task.encoder, task.decoder, info["mean"], info["std"]).eval()
    example = torch.zeros(2, 3, size, size, dtype=torch.uint8)
    with torch.no_grad():
        features, *state = encoder(example)
        tuple_state = not isinstance(task.decoder.init_state(features), Tensor)
    names = [f"state_{i}" for i in range(len(state))]
    attention = task.decoder.attends
    step = DecoderStepGraph(task.decoder, tuple_state, attention).eval()
    tokens = torch.full((2,), task.vocab.bos_id, dtype=torch.long)
    return [
        Graph("encoder", encoder, (example,), {"image": 0, "features": 0, **dict.fromkeys(names, 1)}),
        Graph("decoder_step", step, (tokens, features, *state),
              {"prev_tokens": 0, "features": 0, **dict.fromkeys(names, 1), "log_probs": 0,
               **{f"next_{n}": 1 for n in names}, **({"attention": 0} if attention else {})}),
    ]


def captioner_sidecar(task: Captioner) -> dict[str, Any]:
    """What a captioner's model.json adds: the vocabulary, its special ids and the decoding settings."""
    vocab, hp = task.vocab, task.hparams
    return {
        "kind": "captioner",
        "vocabulary": vocab.itos,
        "special_ids": {"pad": vocab.pad_id, "bos": vocab.bos_id, "eos": vocab.eos_id, "unk": vocab.unk_id},
        "suppress_unk": task.unk_id is not None,
        "max_len": task.max_len,
        "beam_size": int(hp.beam_size),
        "length_penalty": float(hp.length_penalty),
        "decoder": type(task.decoder).__name__,
        "reads": type(task.decoder).reads,
        "step": {"prev_tokens": f"({BATCH},) int64: the previous token of each caption, <bos> first",
                 "features": "the encoder's features (absent when the decoder reads only its state)",
                 "state_i": "the decoder state, batch on axis 1: the encoder's state_i, then the step's next_state_i",
                 "log_probs": f"({BATCH}, {len(vocab)}) float32: log-softmax over the vocabulary",
                 **({"attention": f"({BATCH}, L) float32: attention weights over the L map positions"}
                    if task.decoder.attends else {})},
    }
