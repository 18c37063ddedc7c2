"""Caption decoders behind one interface (`CaptionDecoder`), so training and decoding treat them alike.

Each decoder declares what it reads of the encoder (``reads``): the global image vector (N, D) or the spatial map
(N, L, C); that tensor is the ``image`` argument below, and its last size is the constructor's ``input_dim``.

Teacher forcing: ``forward(image, tokens)`` takes ``tokens`` (N, T) that start with ``<bos>`` and
returns logits (N, T-1, V) where ``logits[:, t]`` scores ``tokens[:, t+1]``: the loss is
``cross_entropy(logits.flatten(0, 1), tokens[:, 1:].flatten(), ignore_index=0)``. Padding (``<pad>`` = 0) must only
follow the caption; logits at positions whose target is ``<pad>`` are unspecified, the others do not depend on how much
padding follows. ``forward_with_aux`` also returns a scalar to add to that loss (zero unless the decoder has one).

Decoding: ``init_state(image) -> state``, then repeatedly ``step(prev_tokens (N,), state, image) -> (log_probs (N, V),
state)``. A state is a tensor or a tuple of tensors
that all keep the batch on dim 1 (as torch RNN hidden states, (layers, N, H)); ``reorder_state(state, index)`` picks
batch rows ``index`` from it, which is all beam search needs to know about a decoder.
"""

from __future__ import annotations

from typing import ClassVar, Literal, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from tincap.runtime.errors import InvalidInput

PAD_ID = 0

State = Tensor | tuple[Tensor, ...]

ImageInput = Literal["global", "spatial"]

_CELLS: dict[str, type[nn.RNNBase]] = {"rnn": nn.RNN, "gru": nn.GRU, "lstm": nn.LSTM}
_IMAGE_INPUTS = ("init_state", "first_step")


class CaptionDecoder(Protocol):
    """What the captioner, greedy decoding, beam search and SCST sampling need of a decoder."""

    reads: ClassVar[ImageInput]
    # True: `step` leaves its attention weights (N, L) in `last_alpha`, and `forward_with_attention` gives them per word
    attends: ClassVar[bool]
    embed: nn.Embedding

    def forward_with_aux(self, image: Tensor, tokens: Tensor) -> tuple[Tensor, Tensor]: ...

    def init_state(self, image: Tensor) -> State: ...

    def step(self, prev_tokens: Tensor, state: State, image: Tensor) -> tuple[Tensor, State]: ...

    def reorder_state(self, state: State, index: Tensor) -> State: ...


def select_batch(state: State, index: Tensor) -> State:
    """Rows `index` of every state tensor (batch on dim 1): beam reordering and expansion to beams."""
    if isinstance(state, Tensor):
        return state.index_select(1, index)
    return tuple(s.index_select(1, index) for s in state)


class RNNDecoder(nn.Module):
    """Show-and-Tell style: an RNN/GRU/LSTM language model conditioned on the global image feature.

    ``image_input="init_state"`` sets every layer's h (and c) to tanh(Linear(feature)); ``"first_step"`` feeds
    Linear(feature) as an input step before ``<bos>`` (whose output is not a prediction).
    """

    reads: ClassVar[ImageInput] = "global"
    attends: ClassVar[bool] = False

    def __init__(
        self,
        vocab_size: int,
        input_dim: int,
        embed_dim: int = 256,
        hidden_dim: int = 512,
        num_layers: int = 1,
        dropout: float = 0.0,
        cell: str = "lstm",
        image_input: str = "init_state",
    ) -> None:
        super().__init__()
        if cell not in _CELLS:
            raise InvalidInput(f"task.decoder.cell={cell}: expected one of {sorted(_CELLS)}")
        if image_input not in _IMAGE_INPUTS:
            raise InvalidInput(f"task.decoder.image_input={image_input}: expected one of {_IMAGE_INPUTS}")
        self.cell, self.image_input = cell, image_input
        self.num_layers, self.hidden_dim = num_layers, hidden_dim
        self.embed = nn.Embedding(vocab_size, embed_dim, padding_idx=PAD_ID)
        self.rnn = _CELLS[cell](
            embed_dim, hidden_dim, num_layers, batch_first=True, dropout=dropout if num_layers > 1 else 0.0
        )
        if image_input == "init_state":
            self.init_h = nn.Linear(input_dim, num_layers * hidden_dim)
            self.init_c = nn.Linear(input_dim, num_layers * hidden_dim) if cell == "lstm" else None
        else:
            self.image_embed = nn.Linear(input_dim, embed_dim)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(hidden_dim, vocab_size)

    def _per_layer(self, x: Tensor) -> Tensor:
        return torch.tanh(x).view(x.size(0), self.num_layers, self.hidden_dim).transpose(0, 1).contiguous()

    def init_state(self, image: Tensor) -> State:
        if self.image_input == "first_step":
            _, state = self.rnn(self.dropout(self.image_embed(image)).unsqueeze(1))
            return state
        h = self._per_layer(self.init_h(image))
        return (h, self._per_layer(self.init_c(image))) if self.init_c is not None else h

    def forward(self, image: Tensor, tokens: Tensor) -> Tensor:
        inputs = tokens[:, :-1]
        # packing stops each caption at its last real target, so padding never enters the RNN
        lengths = (tokens[:, 1:] != PAD_ID).sum(1).clamp(min=1).cpu()
        packed = pack_padded_sequence(self.dropout(self.embed(inputs)), lengths, batch_first=True, enforce_sorted=False)
        out, _ = self.rnn(packed, self.init_state(image))
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=inputs.size(1))
        return self.fc(self.dropout(out))

    def forward_with_aux(self, image: Tensor, tokens: Tensor) -> tuple[Tensor, Tensor]:
        logits = self(image, tokens)
        return logits, logits.new_zeros(())

    def step(self, prev_tokens: Tensor, state: State, image: Tensor) -> tuple[Tensor, State]:
        out, state = self.rnn(self.dropout(self.embed(prev_tokens)).unsqueeze(1), state)
        return F.log_softmax(self.fc(self.dropout(out.squeeze(1))), dim=-1), state

    def reorder_state(self, state: State, index: Tensor) -> State:
        return select_batch(state, index)


class SoftAttention(nn.Module):
    """Additive attention: e_i = w^T tanh(W_a a_i + W_h h), alpha = softmax(e), context = sum_i alpha_i a_i."""

    def __init__(self, feature_dim: int, hidden_dim: int, attention_dim: int) -> None:
        super().__init__()
        self.feature_proj = nn.Linear(feature_dim, attention_dim)
        self.hidden_proj = nn.Linear(hidden_dim, attention_dim)
        self.score = nn.Linear(attention_dim, 1)

    def forward(self, features: Tensor, projected: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
        """`projected` = feature_proj(features), computed once per caption rather than once per step."""
        alpha = self.score(torch.tanh(projected + self.hidden_proj(h).unsqueeze(1))).squeeze(-1).softmax(-1)
        return torch.bmm(alpha.unsqueeze(1), features).squeeze(1), alpha


class AttentionDecoder(nn.Module):
    """Show, Attend and Tell (soft attention): an LSTMCell reading a gated attention context at every step.

    h0, c0 = tanh(Linear(mean of the spatial features)); beta_t = sigmoid(f_beta(h_{t-1})) gates the context;
    logits = L_o(E y_{t-1} + L_h h_t + L_z z_t) (the paper's deep output). It reads the spatial map (N, L, C).
    The state is (h, c, projected): h and c (1, N, H), and the map's attention projection (1, N, L, A), computed
    once per caption instead of at every word. ``last_alpha`` (N, L) holds the weights of the latest ``step``.
    """

    reads: ClassVar[ImageInput] = "spatial"
    attends: ClassVar[bool] = True

    def __init__(
        self,
        vocab_size: int,
        input_dim: int,
        embed_dim: int = 256,
        hidden_dim: int = 512,
        attention_dim: int = 256,
        dropout: float = 0.0,
        alpha_c: float = 1.0,
    ) -> None:
        super().__init__()
        self.alpha_c = alpha_c
        self.embed = nn.Embedding(vocab_size, embed_dim, padding_idx=PAD_ID)
        self.attention = SoftAttention(input_dim, hidden_dim, attention_dim)
        self.init_h = nn.Linear(input_dim, hidden_dim)
        self.init_c = nn.Linear(input_dim, hidden_dim)
        self.gate = nn.Linear(hidden_dim, 1)
        self.lstm = nn.LSTMCell(embed_dim + input_dim, hidden_dim)
        self.out_h = nn.Linear(hidden_dim, embed_dim)
        self.out_z = nn.Linear(input_dim, embed_dim)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(embed_dim, vocab_size)
        self.last_alpha: Tensor | None = None

    def init_state(self, image: Tensor) -> State:
        mean = image.mean(1)
        projected = self.attention.feature_proj(image)  # (N, L, A)
        return (torch.tanh(self.init_h(mean)).unsqueeze(0), torch.tanh(self.init_c(mean)).unsqueeze(0),
                projected.unsqueeze(0))

    def _advance(self, emb: Tensor, state: State, image: Tensor) -> tuple[Tensor, State, Tensor]:
        h, c, projected = state[0].squeeze(0), state[1].squeeze(0), state[2]
        context, alpha = self.attention(image, projected.squeeze(0), h)
        context = torch.sigmoid(self.gate(h)) * context
        h, c = self.lstm(torch.cat([emb, context], dim=-1), (h, c))
        logits = self.fc(self.dropout(emb + self.out_h(h) + self.out_z(context)))
        return logits, (h.unsqueeze(0), c.unsqueeze(0), projected), alpha

    def forward_with_attention(self, image: Tensor, tokens: Tensor) -> tuple[Tensor, Tensor]:
        """Teacher-forced logits (N, T-1, V) and the attention weights (N, T-1, L) that produced them."""
        state = self.init_state(image)
        emb = self.embed(tokens[:, :-1])
        logits, alphas = [], []
        for t in range(emb.size(1)):
            step_logits, state, alpha = self._advance(emb[:, t], state, image)
            logits.append(step_logits)
            alphas.append(alpha)
        return torch.stack(logits, 1), torch.stack(alphas, 1)

    def forward(self, image: Tensor, tokens: Tensor) -> Tensor:
        return self.forward_with_attention(image, tokens)[0]

    def forward_with_aux(self, image: Tensor, tokens: Tensor) -> tuple[Tensor, Tensor]:
        """Logits and the doubly stochastic penalty alpha_c * sum_i (1 - sum_t alpha_ti)^2, averaged over captions."""
        logits, alphas = self.forward_with_attention(image, tokens)
        real = (tokens[:, 1:] != PAD_ID).unsqueeze(-1).to(alphas.dtype)
        coverage = (alphas * real).sum(1)
        return logits, self.alpha_c * ((1.0 - coverage) ** 2).sum(1).mean()

    def step(self, prev_tokens: Tensor, state: State, image: Tensor) -> tuple[Tensor, State]:
        logits, state, self.last_alpha = self._advance(self.embed(prev_tokens), state, image)
        return F.log_softmax(logits, dim=-1), state

    def reorder_state(self, state: State, index: Tensor) -> State:
        return select_batch(state, index)
