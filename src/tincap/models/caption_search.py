"""Writing captions with any `CaptionDecoder` through its stepwise API: greedy, beam search and sampling (for SCST).

Outputs are LongTensors (N, L <= max_len) of generated ids: no `<bos>`, `<eos>` included when produced, `<pad>`
after it. `<pad>` and `<bos>` are never generated, nor `<eos>` before `min_len` words (greedy and beam search write
at least one word: an undertrained model's likeliest caption is often the empty one). `image` is what the decoder reads (its ``reads``), batch first.

Greedy decoding and beam search need only `DecoderSteps`: one step and a way to reorder the state. A PyTorch decoder
is one; so is an exported decoder step run by ONNX Runtime (`tincap.export.onnx_captioner`), which passes the `state`
its encoder graph computed instead of `init_state`, so both backends write their captions with this same code.
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import Tensor

from tincap.models.caption_decoders import CaptionDecoder, State


class DecoderSteps(Protocol):
    """What greedy decoding and beam search call: a decoder advanced one token at a time, from a given state."""

    def step(self, prev_tokens: Tensor, state: State, image: Tensor) -> tuple[Tensor, State]: ...

    def reorder_state(self, state: State, index: Tensor) -> State: ...


def _ban(log_probs: Tensor, ids: tuple[int, ...]) -> Tensor:
    return log_probs.index_fill(-1, torch.tensor(ids, device=log_probs.device), float("-inf"))


def _banned(pad_id: int, bos_id: int, unk_id: int | None) -> tuple[int, ...]:
    """Tokens a caption may never contain: padding, a second <bos>, and (when given) <unk>, which matches no reference."""
    return (pad_id, bos_id) if unk_id is None else (pad_id, bos_id, unk_id)


@torch.no_grad()
def greedy_decode(
    decoder: CaptionDecoder | DecoderSteps,
    image: Tensor,
    max_len: int,
    bos_id: int = 1,
    eos_id: int = 2,
    pad_id: int = 0,
    unk_id: int | None = None,
    min_len: int = 1,
    state: State | None = None,
) -> Tensor:
    """The most likely next token at each step, until every caption has produced `<eos>` or max_len tokens; from
    `state` when given, else the decoder's `init_state(image)`."""
    banned = _banned(pad_id, bos_id, unk_id)
    n = image.size(0)
    state = decoder.init_state(image) if state is None else state
    prev = torch.full((n,), bos_id, dtype=torch.long, device=image.device)
    finished = torch.zeros(n, dtype=torch.bool, device=image.device)
    out = [prev.new_empty((n, 0))]
    for t in range(max_len):
        log_probs, state = decoder.step(prev, state, image)
        prev = _ban(log_probs, banned if t >= min_len else (*banned, eos_id)).argmax(-1)
        out.append(prev.masked_fill(finished, pad_id).unsqueeze(1))
        finished |= prev == eos_id
        if bool(finished.all()):
            break
    return torch.cat(out, 1)


def _normalise(score: Tensor, length: int, length_penalty: float) -> Tensor:
    """GNMT length normalisation, score / ((5 + length) / 6) ** length_penalty; the raw sum when it is 0."""
    return score / ((5 + length) / 6) ** length_penalty if length_penalty > 0 else score


def _start_beams(
    decoder: CaptionDecoder | DecoderSteps, image: Tensor, k: int, bos_id: int, state: State | None = None
) -> tuple[Tensor, State, Tensor, Tensor, Tensor]:
    """k beams per image at `<bos>`: image rows (N,), the decoder state (`state`, else `init_state(image)`) and image
    repeated to N * k rows, the first tokens (N * k,), and the scores (N, k). All beams start identical, so only the
    first may expand (score 0, the others -inf), or the beam would fill with copies."""
    n = image.size(0)
    rows = torch.arange(n, device=image.device)
    state = decoder.init_state(image) if state is None else state
    state = decoder.reorder_state(state, rows.repeat_interleave(k))
    beams_image = image.index_select(0, rows.repeat_interleave(k))
    prev = torch.full((n * k,), bos_id, dtype=torch.long, device=image.device)
    scores = torch.full((n, k), float("-inf"), device=image.device)
    scores[:, 0] = 0.0
    return rows, state, beams_image, prev, scores


@torch.no_grad()
def beam_search(
    decoder: CaptionDecoder | DecoderSteps,
    image: Tensor,
    beam_size: int,
    max_len: int,
    length_penalty: float = 0.0,
    bos_id: int = 1,
    eos_id: int = 2,
    pad_id: int = 0,
    unk_id: int | None = None,
    min_len: int = 1,
    state: State | None = None,
) -> Tensor:
    """Best caption per image; the N x beam_size hypotheses advance as one batch of N * beam_size rows, from `state`
    when given, else the decoder's `init_state(image)`.

    Each step ranks 2 * beam_size extensions per image: those among the top beam_size that end in `<eos>` (or reach
    max_len) compete for the image's best finished caption, the best beam_size that do not end live on. An image stops
    once no live hypothesis can still beat its best finished one (log-probs are <= 0, so a live score can only fall;
    with a length penalty it is bounded by its current sum normalised at max_len).
    """
    banned = _banned(pad_id, bos_id, unk_id)
    n, k = image.size(0), beam_size
    device = image.device
    rows, state, beams_image, prev, scores = _start_beams(decoder, image, k, bos_id, state)
    seqs = torch.empty((n, k, 0), dtype=torch.long, device=device)
    best_score = torch.full((n,), float("-inf"), device=device)
    best_seq = torch.full((n, max_len), pad_id, dtype=torch.long, device=device)
    best_len = torch.zeros(n, dtype=torch.long, device=device)
    done = torch.zeros(n, dtype=torch.bool, device=device)
    is_top_k = torch.arange(2 * k, device=device) < k
    for t in range(max_len):
        log_probs, state = decoder.step(prev, state, beams_image)
        log_probs = _ban(log_probs, banned if t >= min_len else (*banned, eos_id)).view(n, k, -1)
        width = min(2 * k, log_probs.size(-1))
        cand_lp, cand_tok = log_probs.topk(width, dim=-1)
        # a stable sort keeps each beam's extensions in log-prob order on exact ties (after rounding), so that
        # beam_size=1 follows greedy's argmax exactly
        cand_score, order = (scores.unsqueeze(-1) + cand_lp).view(n, -1).sort(dim=-1, descending=True, stable=True)
        cand_score, order = cand_score[:, : 2 * k], order[:, : 2 * k]
        origin = torch.div(order, width, rounding_mode="floor")
        token = cand_tok.view(n, -1).gather(1, order)
        ends = token == eos_id
        if t == max_len - 1:
            ends = torch.ones_like(ends)

        final = ends & is_top_k[: ends.size(1)] & ~done.unsqueeze(1)
        final_score = torch.where(final, _normalise(cand_score, t + 1, length_penalty), float("-inf"))
        top_final, j = final_score.max(1)
        better = top_final > best_score
        if bool(better.any()):
            pick = j.unsqueeze(1)
            caption = torch.cat([seqs[rows, origin.gather(1, pick).squeeze(1)], token.gather(1, pick)], 1)
            best_seq[better, : t + 1] = caption[better]
            best_len[better] = t + 1
            best_score = torch.where(better, top_final, best_score)
        if t == max_len - 1:
            break

        live = ends.to(torch.uint8).sort(dim=1, stable=True).indices[:, :k]
        origin, token, scores = origin.gather(1, live), token.gather(1, live), cand_score.gather(1, live)
        seqs = torch.cat([seqs[rows.unsqueeze(1), origin], token.unsqueeze(-1)], 2)
        state = decoder.reorder_state(state, (rows.unsqueeze(1) * k + origin).view(-1))
        prev = token.view(-1)
        reachable = scores.max(1).values
        if length_penalty > 0:
            reachable = _normalise(reachable, max_len, length_penalty)
        done |= best_score >= reachable
        if bool(done.all()):
            break
    return best_seq[:, : int(best_len.max())]


def sample_captions(
    decoder: CaptionDecoder,
    image: Tensor,
    samples: int,
    max_len: int,
    bos_id: int = 1,
    eos_id: int = 2,
    pad_id: int = 0,
    unk_id: int | None = None,
    temperature: float = 1.0,
) -> tuple[Tensor, Tensor]:
    """`samples` captions per image drawn from the decoder, with gradients: ids (N * samples, L) and the log-prob of
    each drawn token (N * samples, L), 0 after `<eos>`. Rows i * samples .. (i + 1) * samples - 1 belong to image i.

    A temperature below 1 draws from the sharpened softmax(log p / temperature), nearer what greedy decoding writes;
    the log-probs returned stay the decoder's own (ruotianluo's self-critical.pytorch divides them by the temperature:
    the same gradient direction)."""
    banned = _banned(pad_id, bos_id, unk_id)
    n = image.size(0) * samples
    image = image.repeat_interleave(samples, 0)
    state = decoder.init_state(image)
    prev = torch.full((n,), bos_id, dtype=torch.long, device=image.device)
    finished = torch.zeros(n, dtype=torch.bool, device=image.device)
    ids, logps = [], []
    for _ in range(max_len):
        log_probs, state = decoder.step(prev, state, image)
        # renormalised over the tokens that may be drawn: with the banned ones' mass left in, SCST's mostly negative
        # advantages push every drawn word down by moving mass to <unk> and <pad>, which sampling never draws
        # (measured: val CIDEr-D 0.49 -> 0.31 in 25 steps, captions ever longer)
        log_probs = _ban(log_probs, banned).log_softmax(-1)  # (n, V)
        drawn = log_probs.detach().float()
        # at 1, exp() of the log-probs exactly as before the temperature existed: softmax would renormalise them and
        # could change a seeded run's draws by rounding
        probs = drawn.exp() if temperature == 1.0 else (drawn / temperature).softmax(-1)
        prev = torch.multinomial(probs, 1).squeeze(1)
        taken = log_probs.gather(1, prev.unsqueeze(1)).squeeze(1)
        ids.append(prev.masked_fill(finished, pad_id))
        logps.append(taken.masked_fill(finished, 0.0))
        finished = finished | (prev == eos_id)
        if bool(finished.all()):
            break
    return torch.stack(ids, 1), torch.stack(logps, 1)


@torch.no_grad()
def beam_candidates(
    decoder: CaptionDecoder,
    image: Tensor,
    beam_size: int,
    max_len: int,
    bos_id: int = 1,
    eos_id: int = 2,
    pad_id: int = 0,
    unk_id: int | None = None,
    min_len: int = 1,
) -> Tensor:
    """The beam_size likeliest captions per image (N * beam_size, L), rows i * beam_size .. grouped by image: SCST's
    candidates near the decoder's mode. A finished hypothesis stays in the beam, extended by `<pad>` at no cost."""
    banned = _banned(pad_id, bos_id, unk_id)
    n, k = image.size(0), beam_size
    device = image.device
    rows, state, beams_image, prev, scores = _start_beams(decoder, image, k, bos_id)
    seqs = prev.new_empty((n * k, 0))
    finished = torch.zeros(n * k, dtype=torch.bool, device=device)
    for t in range(max_len):
        log_probs, state = decoder.step(prev, state, beams_image)
        log_probs = _ban(log_probs, banned if t >= min_len else (*banned, eos_id))  # (N * k, V)
        pad_only = torch.full_like(log_probs[0], float("-inf")).index_fill(0, torch.tensor(pad_id, device=device), 0.0)
        log_probs = torch.where(finished.unsqueeze(1), pad_only, log_probs)
        vocab = log_probs.size(-1)
        scores, flat = (scores.view(-1, 1) + log_probs).view(n, k * vocab).topk(k, dim=1)  # (N, k)
        source = (rows.unsqueeze(1) * k + torch.div(flat, vocab, rounding_mode="floor")).view(-1)  # (N * k,)
        prev = (flat % vocab).view(-1)
        seqs = torch.cat([seqs[source], prev.unsqueeze(1)], 1)
        state = decoder.reorder_state(state, source)
        finished = finished[source] | (prev == eos_id)
        if bool(finished.all()):
            break
    return seqs


def caption_log_probs(
    decoder: CaptionDecoder, image: Tensor, ids: Tensor, bos_id: int = 1, pad_id: int = 0, unk_id: int | None = None
) -> Tensor:
    """Teacher-forced log-prob (N, L) of each token of captions `ids` (N, L), with gradients, renormalised over the
    tokens that may be written as in `sample_captions`; 0 after `<eos>`."""
    tokens = torch.cat([ids.new_full((ids.size(0), 1), bos_id), ids], 1)  # (N, L + 1)
    log_probs = _ban(decoder(image, tokens), _banned(pad_id, bos_id, unk_id)).log_softmax(-1)  # (N, L, V)
    return log_probs.gather(2, ids.unsqueeze(2)).squeeze(2).masked_fill(ids == pad_id, 0.0)
