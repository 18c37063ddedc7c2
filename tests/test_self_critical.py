"""Self-critical sequence training: hand-worked advantages and loss, sampling, and captions that are all empty."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from tincap.data.caption_datamodule import pad_groups
from tincap.data.vocab import Vocabulary
from tincap.evaluation.caption_metrics import CiderD
from tincap.models.caption_decoders import AttentionDecoder, RNNDecoder
from tincap.models.caption_search import (
    beam_candidates,
    caption_log_probs,
    greedy_decode,
    sample_captions,
)
from tincap.models.caption_transformer import TransformerDecoder
from tincap.models.cnn import CNN
from tincap.runtime.errors import InvalidInput
from tincap.tasks.captioner import Captioner
from tincap.tasks.self_critical import ScstSettings, advantages, self_critical_loss

V, D, C, P = 9, 6, 5, 4  # vocab, global feature dim, spatial channels, spatial positions
PAD, BOS, EOS = 0, 1, 2


pytestmark = pytest.mark.usefixtures("one_thread")


def make_decoder(reads: str, seed: int = 0) -> nn.Module:
    """A decoder of the global vector, or of the spatial map: the attention LSTM, or the Transformer ("transformer")."""
    torch.manual_seed(seed)
    if reads == "spatial":
        return AttentionDecoder(V, C, embed_dim=8, hidden_dim=12, attention_dim=6)
    if reads == "transformer":
        return TransformerDecoder(V, C, d_model=8, num_layers=1, heads=2, ff_dim=16)
    return RNNDecoder(V, D, 8, 12, cell="gru")


def image_for(decoder: nn.Module, n: int, seed: int = 1) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, D, generator=g) if decoder.reads == "global" else torch.randn(n, P, C, generator=g)


# ---------------------------------------------------------------- reward minus baseline, and the loss


def test_advantages_against_the_greedy_and_the_mean_baseline() -> None:
    rewards = torch.tensor([[1.0, 0.5, 0.0]])
    # greedy: every sample minus the greedy caption's reward 0.5
    torch.testing.assert_close(advantages(rewards, torch.tensor([0.5])), torch.tensor([[0.5, 0.0, -0.5]]))
    # mean: each minus the mean of the other two: 1 - 0.25, 0.5 - 0.5, 0 - 0.75
    torch.testing.assert_close(advantages(rewards, None), torch.tensor([[0.75, 0.0, -0.75]]))
    # per image: the second image's samples are compared with its own baseline only
    two = torch.tensor([[1.0, 0.5, 0.0], [2.0, 2.0, 5.0]])
    torch.testing.assert_close(advantages(two, torch.tensor([0.5, 3.0])),
                               torch.tensor([[0.5, 0.0, -0.5], [-1.0, -1.0, 2.0]]))
    torch.testing.assert_close(advantages(two, None), torch.tensor([[0.75, 0.0, -0.75], [-1.5, -1.5, 3.0]]))


def test_self_critical_loss_hand_worked() -> None:
    # row 0: "w <eos> <pad>", advantage +1; row 1: "<eos> <pad> <pad>", advantage -2. The log-probs at <pad> (ids 0)
    # are junk that must not count: loss = -(1 * (-1) + 1 * (-0.5) + (-2) * (-2)) / 3 tokens = -2.5 / 3
    logps = torch.tensor([[-1.0, -0.5, -7.0], [-2.0, -3.0, -9.0]], requires_grad=True)
    ids = torch.tensor([[5, EOS, PAD], [EOS, PAD, PAD]])
    advantage = torch.tensor([1.0, -2.0], requires_grad=True)
    loss = self_critical_loss(logps, ids, advantage, pad_id=PAD)
    assert loss.item() == pytest.approx(-2.5 / 3, abs=1e-7)
    loss.backward()
    # d loss / d logp = -advantage / 3 on real tokens, 0 on padding; the advantage is a constant (no gradient)
    torch.testing.assert_close(logps.grad, torch.tensor([[-1 / 3, -1 / 3, 0.0], [2 / 3, 0.0, 0.0]]))
    assert advantage.grad is None


def test_scst_settings_are_checked() -> None:
    assert ScstSettings().epochs == 0 and ScstSettings(baseline="mean", samples=2).samples == 2
    with pytest.raises(InvalidInput, match=r"task\.scst\.samples=1: expected an integer >= 2"):
        ScstSettings(epochs=1, baseline="mean", samples=1)
    with pytest.raises(InvalidInput, match=r"task\.scst\.baseline=best"):
        ScstSettings(baseline="best")
    with pytest.raises(InvalidInput, match=r"task\.scst\.candidates=top: expected sample or beam"):
        ScstSettings(candidates="top")
    with pytest.raises(InvalidInput, match=r"task\.scst\.temperature=0: expected a number > 0"):
        ScstSettings(temperature=0)
    with pytest.raises(InvalidInput, match=r"task\.scst\.init_from=x\.ckpt but task\.scst\.epochs=0"):
        ScstSettings(init_from="x.ckpt")


# ---------------------------------------------------------------- sampling


def _well_formed(ids: Tensor, max_len: int) -> None:
    assert ids.dtype == torch.long and ids.size(1) <= max_len and not (ids == BOS).any()
    for row in ids.tolist():
        cut = row.index(EOS) + 1 if EOS in row else len(row)
        assert PAD not in row[:cut] and all(x == PAD for x in row[cut:])


@pytest.mark.parametrize("reads", ["global", "spatial", "transformer"])
def test_sampled_tokens_carry_their_teacher_forced_log_probs(reads: str) -> None:
    dec = make_decoder(reads).eval()
    image, k, max_len = image_for(dec, 3), 4, 6
    torch.manual_seed(5)
    ids, logps = sample_captions(dec, image, k, max_len)
    assert ids.shape == logps.shape and ids.size(0) == 3 * k
    _well_formed(ids, max_len)
    real = ids != PAD
    assert logps.requires_grad and (logps[~real] == 0).all() and (logps[real] < 0).all()
    # row r was drawn for image r // k: its log-probs are the decoder's under teacher forcing with that image,
    # renormalised over the tokens that may be drawn (never <pad> or <bos>)
    tokens = torch.cat([torch.full((ids.size(0), 1), BOS), ids], 1)
    with torch.no_grad():
        logits = dec(image.repeat_interleave(k, 0), tokens).index_fill(-1, torch.tensor([PAD, BOS]), float("-inf"))
        expected = logits.log_softmax(-1).gather(-1, ids.unsqueeze(-1))
    torch.testing.assert_close(logps.detach(), torch.where(real, expected.squeeze(-1), 0.0), atol=1e-5, rtol=0)
    torch.manual_seed(5)
    assert torch.equal(sample_captions(dec, image, k, max_len)[0], ids)  # the draws follow torch's seed
    with torch.no_grad():
        dec.fc.bias[EOS] = -1e4  # never ends: every sample runs to max_len
    ids, logps = sample_captions(dec, image, k, max_len)
    assert ids.shape == (3 * k, max_len) and not (ids == PAD).any() and not (ids == EOS).any()


@pytest.mark.parametrize("reads", ["global", "spatial", "transformer"])
def test_a_temperature_sharpens_the_draws_but_not_the_log_probs(reads: str) -> None:
    dec = make_decoder(reads).eval()
    image, max_len = image_for(dec, 2), 6
    with torch.no_grad():
        first = dec.step(torch.full((2,), BOS), dec.init_state(image), image)[0]
        first = first.index_fill(-1, torch.tensor([PAD, BOS]), float("-inf")).log_softmax(-1)  # (2, V)
    n = 4000
    for temperature in (1.0, 0.5):
        torch.manual_seed(3)
        ids, logps = sample_captions(dec, image, n, 1, temperature=temperature)
        # the first word's frequencies follow softmax(log p / temperature), image by image
        seen = torch.stack([torch.bincount(ids.view(2, n, 1)[i, :, 0], minlength=V) / n for i in range(2)])
        torch.testing.assert_close(seen, (first / temperature).softmax(-1), atol=0.03, rtol=0)
        # while the log-probs that carry the gradient are the decoder's own
        torch.testing.assert_close(logps.detach()[:, 0], first.repeat_interleave(n, 0).gather(1, ids[:, :1])[:, 0])
    # a temperature near 0 writes the greedy caption (greedy_decode's min_len=0 allows the same early <eos>)
    ids, _ = sample_captions(dec, image, 3, max_len, temperature=1e-4)
    greedy = greedy_decode(dec, image, max_len, min_len=0).repeat_interleave(3, 0)
    assert torch.equal(ids[:, : greedy.size(1)], greedy) and not ids[:, greedy.size(1):].any()


@pytest.mark.parametrize("reads", ["global", "spatial", "transformer"])
def test_beam_candidates_are_the_likeliest_captions_with_their_log_probs(reads: str) -> None:
    dec = make_decoder(reads).eval()
    image, k, max_len = image_for(dec, 3), 4, 6
    ids = beam_candidates(dec, image, k, max_len)
    assert ids.size(0) == 3 * k
    _well_formed(ids, max_len)
    assert torch.equal(beam_candidates(dec, image, 1, max_len), greedy_decode(dec, image, max_len))
    with torch.no_grad():
        logps = caption_log_probs(dec, image.repeat_interleave(k, 0), ids)
    # the beam ranks by the decoder's own log-probs (no renormalisation): recompute them under teacher forcing
    tokens = torch.cat([torch.full((ids.size(0), 1), BOS), ids], 1)
    with torch.no_grad():
        raw = dec(image.repeat_interleave(k, 0), tokens).log_softmax(-1).gather(-1, ids.unsqueeze(-1)).squeeze(-1)
    totals = torch.where(ids != PAD, raw, 0.0).sum(1).view(3, k)
    assert (totals[:, :-1] >= totals[:, 1:] - 1e-5).all()  # best first
    for i in range(3):  # k different captions per image
        assert len({tuple(r) for r in ids[i * k:(i + 1) * k].tolist()}) == k
    # caption_log_probs is sample_captions' log-prob of the same tokens (renormalised without <pad> and <bos>)
    torch.manual_seed(5)
    drawn, drawn_logps = sample_captions(dec, image, k, max_len)
    with torch.no_grad():
        again = caption_log_probs(dec, image.repeat_interleave(k, 0), drawn)
    torch.testing.assert_close(again, drawn_logps.detach(), atol=1e-5, rtol=0)
    assert (logps[ids != PAD] < 0).all() and (logps[ids == PAD] == 0).all()


def test_scst_survives_captions_that_are_all_empty() -> None:
    dec = make_decoder("spatial").train()
    with torch.no_grad():
        dec.fc.bias[EOS] = 50.0  # <eos> first, every time: every caption is empty
    image = image_for(dec, 2)
    ids, logps = sample_captions(dec, image, 3, max_len=5)
    assert ids.size(0) == 6 and (ids[:, 0] == EOS).all() and (ids[:, 1:] == PAD).all()
    corpus = [[["a", "red", "square"]], [["a", "blue", "circle"], ["a", "circle"]]]
    rewards = torch.tensor(CiderD(corpus).corpus_scores([[] for _ in range(6)], [0, 0, 0, 1, 1, 1])).view(2, 3)
    assert rewards.tolist() == [[0.0] * 3] * 2
    for baseline in (torch.zeros(2), None):
        loss = self_critical_loss(logps, ids, advantages(rewards, baseline).flatten(), PAD)
        assert torch.isfinite(loss)
        dec.zero_grad()
        loss.backward(retain_graph=True)
        assert all(p.grad is None or torch.isfinite(p.grad).all() for p in dec.parameters())
        assert dec.fc.bias.grad is not None


SHAPE_WORDS = ["<pad>", "<bos>", "<eos>", "<unk>", "a", "red", "square", "blue", "circle"]


ATTENTION = {"_target_": "tincap.models.caption_decoders.AttentionDecoder", "embed_dim": 8, "hidden_dim": 12,
             "attention_dim": 6}
TRANSFORMER = {"_target_": "tincap.models.caption_transformer.TransformerDecoder", "d_model": 8, "num_layers": 1,
               "heads": 2, "ff_dim": 16}


def scst_captioner(scst: dict, rewards: list[list[list[str]]], spec: dict = ATTENTION, **decoder: float) -> Captioner:
    """A tiny captioner (attention LSTM unless `spec` says) already in its SCST stage, rewarded against `rewards` (one
    reference list per dataset index)."""
    spec = {**spec, **decoder}
    task = Captioner(net=CNN(1, widths=(8, 16)), optimizer=None, decoder=spec, vocab=Vocabulary(SHAPE_WORDS),
                     scst={"epochs": 1, **scst}, data_info={"max_len": 6})
    task._rewards = CiderD(rewards)
    task.self_critical = True
    return task


@pytest.mark.filterwarnings("ignore:.*self.log.*")  # no Trainer here: Lightning skips logging
@pytest.mark.parametrize("spec", [ATTENTION, TRANSFORMER], ids=["attention", "transformer"])
@pytest.mark.parametrize(("baseline", "candidates"), [("greedy", "sample"), ("mean", "sample"), ("mean", "beam")])
def test_self_critical_step_survives_captions_that_are_all_empty(baseline: str, candidates: str, spec: dict) -> None:
    torch.manual_seed(0)
    task = scst_captioner({"samples": 3, "baseline": baseline, "candidates": candidates},
                          [[["a", "red", "square"]], [["a", "blue", "circle"], ["a", "circle"]]], spec).train()
    with torch.no_grad():
        task.decoder.fc.bias[task.vocab.eos_id] = 50.0
    loss = task.training_step((torch.randn(2, 3, 32, 32), torch.tensor([1, 0])), 0)
    assert torch.isfinite(loss)
    if candidates == "sample":
        assert loss.item() == 0.0  # all rewards 0, so every advantage is 0
    # beam candidates write at least one word (min_len), and an image's three differ, so their rewards differ
    loss.backward()
    assert task.decoder.fc.bias.grad is not None and torch.isfinite(task.decoder.fc.bias.grad).all()
    assert task.decoder.training  # the greedy baseline's eval() is undone


@pytest.mark.filterwarnings("ignore:.*self.log.*")
def test_cross_entropy_anchor_adds_the_weighted_loss_of_each_images_own_references() -> None:
    torch.manual_seed(0)
    # no caption can score against these rewards' references: SCST's part of the loss is 0
    task = scst_captioner({"samples": 2, "ce_weight": 0.5}, [[["zebra"]], [["zebra", "crossing"]]],
                          dropout=0.0, alpha_c=0.1).eval()
    references = [[[1, 4, 5, 6, 2]], [[1, 4, 7, 8, 2], [1, 4, 8, 2]]]  # image 0: one caption, image 1: two
    task._train_tokens = pad_groups(references, 2)
    x = torch.randn(2, 3, 32, 32) * torch.tensor([1.0, 30.0]).view(2, 1, 1, 1)  # two images the decoder tells apart
    image = task.encoder(x)

    def by_hand(order: tuple[int, int]) -> float:
        """Each (image, reference) pair alone: the token-weighted mean NLL over all three captions, plus the aux."""
        nll, tokens, rows, caps = 0.0, 0, [], []
        for row, dataset_index in enumerate(order):
            for k, ids in enumerate(references[dataset_index]):
                seq = torch.tensor([ids])
                logits, _ = task.decoder.forward_with_aux(image[row : row + 1], seq)
                nll += torch.nn.functional.cross_entropy(logits[0], seq[0, 1:], reduction="sum").item()
                tokens += len(ids) - 1
                rows.append(row)
                caps.append(task._train_tokens[dataset_index, k])
        _, aux = task.decoder.forward_with_aux(image[rows], torch.stack(caps))  # the attention penalty, per caption
        return 0.5 * (nll / tokens + aux.item())

    for order in ((1, 0), (0, 1)):
        assert task.training_step((x, torch.tensor(order)), 0).item() == pytest.approx(by_hand(order), rel=1e-5)
    assert by_hand((1, 0)) != pytest.approx(by_hand((0, 1)), rel=1e-3)  # which references an image gets matters


@pytest.mark.filterwarnings("ignore:.*self.log.*")  # no Trainer here: Lightning skips logging
def test_the_step_samples_at_task_scst_temperature() -> None:
    losses = {}
    for temperature in (1.0, 1e-4):
        torch.manual_seed(0)
        # no dropout: the draws alone decide whether an image's samples differ
        task = scst_captioner({"samples": 4, "baseline": "mean", "temperature": temperature},
                              [[["a", "red", "square"]], [["a", "blue", "circle"], ["a", "circle"]]],
                              dropout=0.0).train()
        losses[temperature] = task.training_step((torch.randn(2, 3, 32, 32), torch.tensor([1, 0])), 0).item()
    # at temperature 1 an untrained decoder's 4 samples differ, and so do their rewards; near 0 all 4 are the greedy
    # caption, every advantage is 0 and so is the loss
    assert losses[1.0] != 0.0 and losses[1e-4] == 0.0
