"""A Transformer caption decoder (Vaswani et al. 2017, pre-norm): causal self-attention over the words written so far
and cross-attention over the encoder's spatial map, behind the same `CaptionDecoder` contract as the RNN decoders.

Decoding keeps a cache of every layer's keys and values instead of recomputing the prefix at each word. The cache has
a fixed length (``max_positions``) and each step writes its own slot, so a state's shapes never change from step to
step: beam search reorders it like an RNN's, and an exported decoder step has no growing axis.
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tincap.models.caption_decoders import PAD_ID, ImageInput, State, select_batch
from tincap.runtime.errors import InvalidInput


def _heads(x: Tensor, heads: int) -> Tensor:
    """(N, T, D) -> (N, heads, T, D / heads)."""
    n, t, d = x.shape
    return x.view(n, t, heads, d // heads).transpose(1, 2)


def _attend(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, heads: int) -> tuple[Tensor, Tensor]:
    """Scaled dot-product attention of q (N, Tq, D) over k, v (N, Tk, D); `mask` (N or 1, Tq, Tk) is True where a query
    may look. Returns the mixed values (N, Tq, D) and the weights of every head (N, heads, Tq, Tk)."""
    n, tq, d = q.shape
    scores = _heads(q, heads) @ _heads(k, heads).transpose(-1, -2) / math.sqrt(d // heads)  # (N, h, Tq, Tk)
    if mask is not None:
        scores = scores.masked_fill(~mask.unsqueeze(1), float("-inf"))
    weights = scores.softmax(-1)
    out = (weights @ _heads(v, heads)).transpose(1, 2).reshape(n, tq, d)  # (N, Tq, D)
    return out, weights


class DecoderLayer(nn.Module):
    """Pre-norm: x + SelfAttention(LN(x)), then + CrossAttention(LN(x), image), then + FeedForward(LN(x))."""

    def __init__(self, d_model: int, heads: int, ff_dim: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.norm_self, self.norm_cross, self.norm_ff = (nn.LayerNorm(d_model) for _ in range(3))
        self.self_qkv = nn.Linear(d_model, 3 * d_model)
        self.self_out = nn.Linear(d_model, d_model)
        self.cross_q = nn.Linear(d_model, d_model)
        self.cross_kv = nn.Linear(d_model, 2 * d_model)
        self.cross_out = nn.Linear(d_model, d_model)
        self.ff = nn.Sequential(nn.Linear(d_model, ff_dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(ff_dim, d_model))
        self.dropout = nn.Dropout(dropout)

    def memory(self, image: Tensor) -> tuple[Tensor, Tensor]:
        """The cross-attention keys and values (N, L, D) of the projected image map (N, L, D)."""
        k, v = self.cross_kv(image).chunk(2, -1)
        return k, v

    def forward(self, x: Tensor, self_mask: Tensor, cross_k: Tensor, cross_v: Tensor,
                cache: tuple[Tensor, Tensor, Tensor] | None = None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """x (N, T, D) attends to its own keys where `self_mask` (N or 1, T, S) allows, then to the image's `cross_k`,
        `cross_v` (N, L, D). With `cache` (keys, values (N, S, D) and the slot mask (N, S, 1) of this step's word), x
        is one word (N, 1, D) whose keys and values are written into the cache's slot first. Returns x, the keys and
        values it attended to (N, S, D) and the cross-attention weights (N, T, L)."""
        q, k, v = self.self_qkv(self.norm_self(x)).chunk(3, -1)  # (N, T, D) each
        if cache is not None:
            cached_k, cached_v, here = cache
            k, v = torch.where(here, k, cached_k), torch.where(here, v, cached_v)  # (N, S, D)
        mixed, _ = _attend(q, k, v, self_mask, self.heads)
        x = x + self.dropout(self.self_out(mixed))
        mixed, alpha = _attend(self.cross_q(self.norm_cross(x)), cross_k, cross_v, None, self.heads)
        x = x + self.dropout(self.cross_out(mixed))
        x = x + self.dropout(self.ff(self.norm_ff(x)))
        return x, k, v, alpha.mean(1)  # the cross-attention averaged over heads


class TransformerDecoder(nn.Module):
    """Pre-norm Transformer decoder over the encoder's spatial map (N, L, input_dim), with learned word positions.

    ``tie_embedding`` scores words with the input embedding's transpose (Press & Wolf 2017). The state is
    (self_keys, self_values, cross_keys, cross_values, position): the caches (layers, N, max_positions, D) filled up
    to `position`, the image's keys and values (layers, N, L, D) computed once per caption, and the next word's
    position (1, N). ``last_alpha`` (N, L) holds the last layer's cross-attention of the latest ``step``, averaged
    over heads.
    """

    reads: ClassVar[ImageInput] = "spatial"
    attends: ClassVar[bool] = True

    def __init__(
        self,
        vocab_size: int,
        input_dim: int,
        d_model: int = 512,
        num_layers: int = 3,
        heads: int = 8,
        ff_dim: int = 2048,
        dropout: float = 0.1,
        max_positions: int = 32,
        tie_embedding: bool = True,
    ) -> None:
        super().__init__()
        if d_model % heads:
            raise InvalidInput(f"task.decoder.d_model={d_model} must be a multiple of task.decoder.heads={heads}")
        self.d_model, self.heads, self.max_positions = d_model, heads, max_positions
        self.embed = nn.Embedding(vocab_size, d_model, padding_idx=PAD_ID)
        # small and unscaled (as GPT-2), not Vaswani et al.'s x sqrt(d_model): word embeddings that large drown the
        # image's cross-attention in the residual stream, and the decoder learns a language model that ignores it
        nn.init.normal_(self.embed.weight, std=0.02)
        with torch.no_grad():
            self.embed.weight[PAD_ID].zero_()
        self.positions = nn.Embedding(max_positions, d_model)
        nn.init.normal_(self.positions.weight, std=0.02)
        self.image_proj = nn.Sequential(nn.Linear(input_dim, d_model), nn.LayerNorm(d_model))
        self.layers = nn.ModuleList(DecoderLayer(d_model, heads, ff_dim, dropout) for _ in range(num_layers))
        self.norm = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(d_model, vocab_size)
        if tie_embedding:
            self.fc.weight = self.embed.weight
        self.last_alpha: Tensor | None = None

    def _inputs(self, tokens: Tensor, positions: Tensor) -> Tensor:
        """Word embeddings plus their positions: (N, T, D)."""
        return self.dropout(self.embed(tokens) + self.positions(positions))

    def _memory(self, image: Tensor) -> list[tuple[Tensor, Tensor]]:
        projected = self.dropout(self.image_proj(image))  # (N, L, D)
        return [layer.memory(projected) for layer in self.layers]

    def forward_with_attention(self, image: Tensor, tokens: Tensor) -> tuple[Tensor, Tensor]:
        """Teacher-forced logits (N, T-1, V) and the last layer's cross-attention (N, T-1, L) that produced them."""
        inputs = tokens[:, :-1]
        t = inputs.size(1)
        if t > self.max_positions:
            raise InvalidInput(f"captions of {t} tokens exceed task.decoder.max_positions={self.max_positions}; "
                               "raise it (or lower data.max_len)")
        x = self._inputs(inputs, torch.arange(t, device=tokens.device).unsqueeze(0))
        causal = torch.ones(t, t, dtype=torch.bool, device=tokens.device).tril().unsqueeze(0)  # (1, T, T)
        alpha = None
        for layer, (cross_k, cross_v) in zip(self.layers, self._memory(image)):
            x, _, _, alpha = layer(x, causal, cross_k, cross_v)
        return self.fc(self.norm(x)), alpha

    def forward(self, image: Tensor, tokens: Tensor) -> Tensor:
        return self.forward_with_attention(image, tokens)[0]

    def forward_with_aux(self, image: Tensor, tokens: Tensor) -> tuple[Tensor, Tensor]:
        logits = self(image, tokens)
        return logits, logits.new_zeros(())

    def init_state(self, image: Tensor) -> State:
        memory = self._memory(image)
        cross_k = torch.stack([k for k, _ in memory])  # (layers, N, L, D)
        cross_v = torch.stack([v for _, v in memory])
        cache = cross_k.new_zeros(len(self.layers), image.size(0), self.max_positions, self.d_model)
        position = torch.zeros_like(cross_k[:1, :, 0, 0], dtype=torch.long)  # (1, N)
        return cache, cache.clone(), cross_k, cross_v, position

    def step(self, prev_tokens: Tensor, state: State, image: Tensor) -> tuple[Tensor, State]:
        self_k, self_v, cross_k, cross_v, position = state
        slots = torch.arange(self.max_positions, device=prev_tokens.device)
        here = (slots == position.view(-1, 1)).unsqueeze(-1)  # (N, S, 1): the slot this word writes
        seen = (slots <= position.view(-1, 1)).unsqueeze(1)  # (N, 1, S): the slots it may read
        x = self._inputs(prev_tokens.unsqueeze(1), position.view(-1, 1).clamp(max=self.max_positions - 1))  # (N, 1, D)
        keys, values, alpha = [], [], None
        for i, layer in enumerate(self.layers):
            x, layer_k, layer_v, alpha = layer(x, seen, cross_k[i], cross_v[i], (self_k[i], self_v[i], here))
            keys.append(layer_k)
            values.append(layer_v)
        self.last_alpha = alpha.squeeze(1)  # (N, L)
        log_probs = F.log_softmax(self.fc(self.norm(x.squeeze(1))), dim=-1)  # (N, V)
        return log_probs, (torch.stack(keys), torch.stack(values), cross_k, cross_v, position + 1)

    def reorder_state(self, state: State, index: Tensor) -> State:
        return select_batch(state, index)
