"""Caption encoder, decoders and decoding: shapes, padding invariance, stepwise == teacher forcing, beam search."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tincap.data.vocab import Vocabulary
from tincap.models.caption_decoders import AttentionDecoder, RNNDecoder
from tincap.models.caption_encoder import CaptionEncoder
from tincap.models.caption_search import beam_search, greedy_decode
from tincap.models.caption_transformer import TransformerDecoder
from tincap.models.cnn import CNN
from tincap.tasks.captioner import Captioner

V, D, C, P = 12, 8, 6, 4  # vocab, global feature dim, spatial channels, spatial positions
PAD, BOS, EOS = 0, 1, 2
KINDS = [f"{cell}-{inp}" for cell in ("rnn", "gru", "lstm") for inp in ("init_state", "first_step")] + ["attention",
                                                                                                   "transformer"]


pytestmark = pytest.mark.usefixtures("one_thread")


def make_decoder(kind: str, seed: int = 0, num_layers: int = 2, dropout: float = 0.1) -> nn.Module:
    torch.manual_seed(seed)
    if kind == "attention":
        return AttentionDecoder(V, C, embed_dim=8, hidden_dim=16, attention_dim=8, dropout=dropout)
    if kind == "transformer":
        return TransformerDecoder(V, C, d_model=16, num_layers=num_layers, heads=2, ff_dim=32, dropout=dropout)
    cell, image_input = kind.split("-")
    return RNNDecoder(V, D, 8, 16, num_layers, dropout, cell=cell, image_input=image_input)


def features(dec: nn.Module, n: int, seed: int = 1) -> Tensor:
    """What `dec` reads of n images: a global vector (n, D) or a spatial map (n, P, C)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, D, generator=g) if dec.reads == "global" else torch.randn(n, P, C, generator=g)


def captions(lengths: list[int], extra_pad: int = 0, seed: int = 2) -> Tensor:
    """<bos> w_1..w_L <eos> then <pad>s, words drawn from ids 3..V-1."""
    g = torch.Generator().manual_seed(seed)
    tokens = torch.full((len(lengths), max(lengths) + 2 + extra_pad), PAD)
    for i, length in enumerate(lengths):
        tokens[i, 0] = BOS
        tokens[i, 1 : length + 1] = torch.randint(3, V, (length,), generator=g)
        tokens[i, length + 1] = EOS
    return tokens


def state_tensors(state: Tensor | tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    return state if isinstance(state, tuple) else (state,)


def sequence_logprob(decoder: nn.Module, image: Tensor, out: Tensor) -> Tensor:
    """Total log-prob of decoded ids (as returned by decoding) under teacher forcing."""
    tokens = torch.cat([torch.full((out.size(0), 1), BOS), out], 1)
    with torch.no_grad():
        logp = decoder(image, tokens).log_softmax(-1).gather(-1, tokens[:, 1:, None]).squeeze(-1)
    return (logp * (tokens[:, 1:] != PAD)).sum(1)


def test_encoder_shapes_and_freeze() -> None:
    torch.manual_seed(0)
    backbone = CNN(5, widths=(8, 16), batch_norm=True)
    x = torch.randn(2, 3, 32, 32)
    glob = CaptionEncoder(backbone, "global", embed_dim=10, freeze=True).train()
    spatial = CaptionEncoder(backbone, "spatial", embed_dim=10, freeze=True).train()
    bn = next(m for m in backbone.modules() if isinstance(m, nn.BatchNorm2d))
    stats = bn.running_mean.clone()
    g, s = glob(x), spatial(x)
    assert g.shape == (2, 10) and glob.output_dim == 10 and glob.feature_dim == 16 and glob.project is not None
    assert s.shape == (2, 8 * 8, 16) and spatial.output_dim == 16 and spatial.project is None
    assert glob.training and spatial.training and not backbone.training and torch.equal(bn.running_mean, stats)
    assert not any(p.requires_grad for p in backbone.parameters()) and g.requires_grad and not s.requires_grad
    torch.testing.assert_close(glob.pooled(x), s.mean(1))  # the nearest baseline's space: the pooled map
    assert glob.feature_map(x).shape == (2, 16, 8, 8)
    trainable = CaptionEncoder(CNN(5, widths=(8, 16)), "spatial", embed_dim=10).train()
    assert trainable.backbone.training and trainable(x).requires_grad


def test_fine_tuned_encoder_with_frozen_norms_keeps_pretrained_statistics() -> None:
    torch.manual_seed(0)
    backbone = CNN(5, widths=(8, 16), batch_norm=True)
    encoder = CaptionEncoder(backbone, "spatial", frozen_norms=True).train()
    norms = [m for m in backbone.modules() if isinstance(m, nn.BatchNorm2d)]
    convs = [m for m in backbone.modules() if isinstance(m, nn.Conv2d)]
    stats = [bn.running_mean.clone() for bn in norms]
    weights = [bn.weight.detach().clone() for bn in norms]
    optimizer = torch.optim.SGD([p for p in encoder.parameters() if p.requires_grad], lr=0.1)
    encoder(torch.randn(4, 3, 32, 32) * 3 + 1).square().mean().backward()
    optimizer.step()
    assert norms and not any(bn.training for bn in norms) and backbone.training  # the rest trains
    assert all(torch.equal(bn.running_mean, s) for bn, s in zip(norms, stats))
    assert all(torch.equal(bn.weight, w) and bn.weight.grad is None for bn, w in zip(norms, weights))
    assert all(c.weight.requires_grad and c.weight.grad is not None for c in convs)
    trained = CaptionEncoder(CNN(5, widths=(8, 16), batch_norm=True), "spatial").train()
    assert all(m.training and m.weight.requires_grad for m in trained.modules() if isinstance(m, nn.BatchNorm2d))


def test_decoders_declare_what_they_read() -> None:
    assert RNNDecoder.reads == "global" and AttentionDecoder.reads == TransformerDecoder.reads == "spatial"


def make_captioner(decoder: dict) -> Captioner:
    torch.manual_seed(0)
    vocab = Vocabulary(["<pad>", "<bos>", "<eos>", "<unk>", "a", "red", "square"])
    return Captioner(net=CNN(5, widths=(8, 16)), optimizer=None, decoder=decoder, vocab=vocab, embed_dim=10,
                     data_info={"max_len": 8})


@pytest.mark.parametrize(
    ("decoder", "reads"),
    [
        ({"_target_": "tincap.models.caption_decoders.AttentionDecoder", "embed_dim": 8, "hidden_dim": 12,
          "attention_dim": 6}, "spatial"),
        ({"_target_": "tincap.models.caption_decoders.RNNDecoder", "embed_dim": 8, "hidden_dim": 12, "cell": "gru"},
         "global"),
    ],
)
def test_captioner_feeds_the_decoder_what_it_reads(decoder: dict, reads: str) -> None:
    task = make_captioner(decoder).eval()
    assert type(task.decoder).__name__ == decoder["_target_"].rsplit(".", 1)[1] and type(task.decoder).reads == reads
    feature_dim = task.encoder.backbone.feature_dim
    expected = 10 if reads == "global" else feature_dim  # the task's embed_dim, or the backbone's channels
    assert feature_dim == 16 and task.encoder.output_dim == expected
    assert (task.encoder.project is None) == (reads == "spatial")
    assert task.decoder.init_h.in_features == expected  # the decoder was built for what the encoder hands it
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        image = task.encoder(x)
        assert image.shape == ((2, 8 * 8, feature_dim) if reads == "spatial" else (2, 10))
        _well_formed(task.generate(x, beam_size=1), 8)
        _well_formed(task.generate(x, beam_size=2), 8)
    assert len(task.captions(x)) == 2


@pytest.mark.parametrize("kind", KINDS)
def test_decoder_shapes(kind: str) -> None:
    dec = make_decoder(kind).train()
    image = features(dec, 3)
    tokens = captions([4, 2, 5])
    logits, aux = dec.forward_with_aux(image, tokens)
    assert logits.shape == (3, tokens.size(1) - 1, V) and aux.shape == ()
    F.cross_entropy(logits.flatten(0, 1), tokens[:, 1:].flatten(), ignore_index=PAD).add(aux).backward()
    state = dec.init_state(image)
    log_probs, state = dec.step(tokens[:, 0], state, image)
    assert log_probs.shape == (3, V)
    assert torch.allclose(log_probs.exp().sum(-1), torch.ones(3), atol=1e-5)
    reordered = dec.reorder_state(state, torch.tensor([2, 2, 0]))
    for a, b in zip(state_tensors(state), state_tensors(reordered)):
        assert torch.equal(b, a[:, [2, 2, 0]])
    if dec.attends:
        assert dec.last_alpha.shape == (3, P) and torch.allclose(dec.last_alpha.sum(-1), torch.ones(3))
        assert (aux > 0) == (kind == "attention")  # the doubly stochastic penalty


@pytest.mark.parametrize("kind", KINDS)
def test_padding_does_not_change_real_positions(kind: str) -> None:
    dec = make_decoder(kind).eval()
    image = features(dec, 3)
    lengths = [4, 1, 6]
    short, long = captions(lengths), captions(lengths, extra_pad=5)
    a, aux_a = dec.forward_with_aux(image, short)
    b, aux_b = dec.forward_with_aux(image, long)
    for i, length in enumerate(lengths):  # equal up to rounding: attention's sums run over more (masked) positions
        torch.testing.assert_close(a[i, : length + 1], b[i, : length + 1], atol=1e-6, rtol=0)
    assert torch.equal(aux_a, aux_b)


@pytest.mark.parametrize("kind", KINDS)
def test_step_reproduces_teacher_forcing(kind: str) -> None:
    dec = make_decoder(kind).eval()
    image = features(dec, 3)
    tokens = captions([5, 5, 5])
    with torch.no_grad():
        expected = dec(image, tokens).log_softmax(-1)
        state = dec.init_state(image)
        for t in range(tokens.size(1) - 1):
            log_probs, state = dec.step(tokens[:, t], state, image)
            torch.testing.assert_close(log_probs, expected[:, t], atol=1e-5, rtol=0)


@pytest.mark.parametrize("kind", KINDS)
def test_beam_of_one_is_greedy(kind: str) -> None:
    for seed in range(3):
        dec = make_decoder(kind, seed=seed).eval()
        image = features(dec, 5, seed=seed + 10)
        assert torch.equal(beam_search(dec, image, beam_size=1, max_len=7), greedy_decode(dec, image, max_len=7))


@pytest.mark.parametrize("kind", KINDS)
def test_beam_scores_at_least_greedy(kind: str) -> None:
    # Not a theorem (the greedy path can drop out of the beam), so allow a rare loss per image, never on the total.
    beam_lp, greedy_lp = [], []
    for seed in range(3):
        dec = make_decoder(kind, seed=seed).eval()
        image = features(dec, 8, seed=seed + 20)
        beam_lp.append(sequence_logprob(dec, image, beam_search(dec, image, beam_size=3, max_len=8)))
        greedy_lp.append(sequence_logprob(dec, image, greedy_decode(dec, image, max_len=8)))
    beam, greedy = torch.cat(beam_lp), torch.cat(greedy_lp)
    assert beam.sum() >= greedy.sum() and (beam < greedy - 1e-5).sum() <= 2


@pytest.mark.parametrize("kind", ["gru-init_state", "lstm-first_step", "attention", "transformer"])
@pytest.mark.parametrize("length_penalty", [0.0, 1.0])
def test_wide_beam_is_exhaustive_search(kind: str, length_penalty: float) -> None:
    """With more beams than prefixes, beam search must return the best caption of all (by the same score)."""
    dec = make_decoder(kind).eval()
    image = features(dec, 2)
    max_len, words = 3, list(range(EOS, V))
    candidates = [[w, EOS] for w in words[1:]]  # never the empty caption [EOS] (min_len=1)
    candidates += [[a, b, c] for a, b in itertools.product(words[1:], repeat=2) for c in words]
    for i in range(2):
        out = torch.tensor([c + [PAD] * (max_len - len(c)) for c in candidates])
        n = len(candidates)
        logp = sequence_logprob(dec, image[i : i + 1].expand(n, *image.shape[1:]), out)
        lengths = (out != PAD).sum(1)
        score = logp / ((5 + lengths) / 6) ** length_penalty if length_penalty > 0 else logp
        best = out[score.argmax()]
        found = beam_search(dec, image[i : i + 1], 100, max_len, length_penalty=length_penalty)
        assert found[0].tolist() == best[: found.size(1)].tolist() and (best[found.size(1) :] == PAD).all()


def _well_formed(out: Tensor, max_len: int) -> None:
    assert out.dtype == torch.long and out.size(1) <= max_len and not (out == BOS).any()
    for row in out.tolist():
        cut = row.index(EOS) + 1 if EOS in row else len(row)
        assert PAD not in row[:cut] and all(x == PAD for x in row[cut:])


@pytest.mark.parametrize("kind", ["lstm-init_state", "gru-first_step", "attention", "transformer"])
def test_max_len_respected(kind: str) -> None:
    dec = make_decoder(kind).eval()
    image = features(dec, 4)
    for out in (
        greedy_decode(dec, image, max_len=5),
        beam_search(dec, image, beam_size=3, max_len=5),
        beam_search(dec, image, beam_size=4, max_len=5, length_penalty=1.0),
    ):
        _well_formed(out, 5)
    with torch.no_grad():
        dec.fc.bias[EOS] = -1e4  # never ends: every caption runs to max_len
    assert greedy_decode(dec, image, max_len=5).shape == (4, 5)
    out = beam_search(dec, image, beam_size=3, max_len=5, length_penalty=0.6)
    assert out.shape == (4, 5) and not (out == PAD).any()


@pytest.mark.parametrize("kind", ["lstm-init_state", "gru-first_step", "rnn-init_state", "attention", "transformer"])
def test_overfits_three_captions(kind: str) -> None:
    dec = make_decoder(kind, num_layers=1, dropout=0.0).train()
    image = features(dec, 3, seed=5)
    tokens = torch.tensor([[BOS, 4, 5, 6, EOS, PAD], [BOS, 7, 8, EOS, PAD, PAD], [BOS, 9, 4, 10, 11, EOS]])
    opt = torch.optim.Adam(dec.parameters(), lr=1e-2)
    for _ in range(200):
        logits, aux = dec.forward_with_aux(image, tokens)
        loss = F.cross_entropy(logits.flatten(0, 1), tokens[:, 1:].flatten(), ignore_index=PAD) + 0.01 * aux
        opt.zero_grad()
        loss.backward()
        opt.step()
    dec.eval()
    assert torch.equal(greedy_decode(dec, image, max_len=10), tokens[:, 1:])
    assert torch.equal(beam_search(dec, image, beam_size=3, max_len=10), tokens[:, 1:])


@pytest.mark.parametrize("kind", ["lstm-init_state", "attention", "transformer"])
def test_greedy_and_beam_write_at_least_one_word(kind: str) -> None:
    """Even a decoder that wants `<eos>` first writes a word: min_len=1 bans the empty caption."""
    dec = make_decoder(kind).eval()
    with torch.no_grad():
        dec.fc.bias[EOS] = 50.0
    image = features(dec, 3)
    for out in (greedy_decode(dec, image, max_len=5), beam_search(dec, image, 3, max_len=5)):
        assert (out[:, 0] != EOS).all() and (out[:, 1] == EOS).all()
    assert (greedy_decode(dec, image, max_len=5, min_len=0) == EOS).all()
