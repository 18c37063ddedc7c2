"""Captioning as a LightningModule: a classifier backbone encodes, an RNN/attention decoder writes, BLEU/CIDEr score."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.loggers import TensorBoardLogger
from torch import Tensor

from tincap.atomic import atomic_write_csv
from tincap.data.vocab import Vocabulary
from tincap.evaluation.caption_metrics import (
    best_blind_caption,
    cider_d,
    corpus_bleu,
    embedding_lookup,
    mean_cosine,
    nearest_neighbour_captions,
)
from tincap.evaluation.figures import caption_grid_figure
from tincap.models.backbone import Backbone
from tincap.models.caption_encoder import CaptionEncoder
from tincap.models.decoding import beam_search, greedy_decode
from tincap.models.digest import state_digest
from tincap.tasks.schedules import optimizer_config, scale_group_lrs

log = logging.getLogger(__name__)


class Captioner(L.LightningModule):
    """Encoder (`net`, any tincap backbone) + decoder (`decoder` config); the vocabulary travels in the checkpoint."""

    def __init__(
        self,
        net: Backbone,
        optimizer: Callable[..., torch.optim.Optimizer] | None,
        decoder: dict[str, Any],
        scheduler: Callable[..., dict[str, Any]] | None = None,
        embed_dim: int = 256,
        freeze_encoder: bool = False,
        encoder_lr_scale: float = 0.1,
        beam_size: int = 3,
        length_penalty: float = 0.0,
        suppress_unk: bool = True,
        model_cfg: dict[str, Any] | None = None,
        data_info: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["net", "optimizer", "scheduler"], logger=False)
        self.vocab = Vocabulary.from_state_dict(data_info["vocab"])
        self.encoder = CaptionEncoder(net, embed_dim, freeze=freeze_encoder)
        self.decoder = hydra.utils.instantiate(
            decoder, vocab_size=len(self.vocab), **_decoder_dims(decoder, embed_dim, self.encoder.feature_dim)
        )
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.max_len = int(data_info.get("max_len", 20))
        self._hyps: dict[str, list[tuple[Tensor, Tensor]]] = {"val": [], "test": []}
        self.results: dict[str, dict[str, Any]] = {}

    output_stages = ("val", "test")

    @property
    def net(self) -> Backbone:
        return self.encoder.backbone

    def setup(self, stage: str) -> None:
        """With a frozen encoder, ask the datamodule for its cached feature maps instead of pixels."""
        dm = self.trainer.datamodule if self._trainer is not None else None
        if self.encoder.freeze and dm is not None and hasattr(dm, "use_encoder"):
            dm.use_encoder(self.encoder.feature_map, state_digest(self.encoder.backbone))
            self.encoder.precomputed = True

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, tokens = batch
        global_feat, spatial = self.encoder(x)
        if tokens.dim() == 3:  # (N, K, T): all K captions of each image share one encoder pass
            keep = tokens.flatten(0, 1)[:, 0] != self.vocab.pad_id
            k = tokens.shape[1]
            global_feat = global_feat.repeat_interleave(k, 0)[keep]
            spatial = spatial.repeat_interleave(k, 0)[keep]
            tokens = tokens.flatten(0, 1)[keep]
        logits, aux = self.decoder.forward_with_aux(global_feat, spatial, tokens)
        loss = F.cross_entropy(logits.flatten(0, 1).float(), tokens[:, 1:].flatten(), ignore_index=self.vocab.pad_id)
        self.log("train/loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=len(x))
        return loss + aux

    def generate(self, x: Tensor, beam_size: int = 1) -> Tensor:
        """Token ids (N, <= max_len) of the best caption per image: greedy for beam 1, else beam search."""
        global_feat, spatial = self.encoder(x)
        unk = self.vocab.unk_id if self.hparams.get("suppress_unk", True) else None
        if beam_size <= 1:
            return greedy_decode(self.decoder, global_feat, spatial, self.max_len, unk_id=unk)
        return beam_search(self.decoder, global_feat, spatial, beam_size, self.max_len, self.hparams.length_penalty,
                           unk_id=unk)

    def captions(self, x: Tensor, beam_size: int = 1) -> list[str]:
        return [self.vocab.decode(row.tolist()) for row in self.generate(x, beam_size)]

    def _eval_step(self, stage: str, batch: tuple[Tensor, Tensor]) -> None:
        x, index = batch
        beam = 1 if stage == "val" else self.hparams.beam_size
        self._hyps[stage].append((index.cpu(), self.generate(x, beam).cpu()))

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._eval_step("val", batch)

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._eval_step("test", batch)

    def score(self, hypotheses: list[list[str]], references: list[list[list[str]]]) -> dict[str, float]:
        """BLEU-1..4, CIDEr-D and the coursework's cosine of averaged decoder word embeddings."""
        scores = corpus_bleu(hypotheses, references)
        scores["cider"] = cider_d(hypotheses, references)[0]
        lookup = embedding_lookup(self.decoder.embed.weight, self.vocab.stoi, ignore=("<pad>", "<bos>", "<eos>", "<unk>"))
        scores["cosine"] = mean_cosine(hypotheses, references, lookup)
        return scores

    def _finish(self, stage: str) -> None:
        outputs, self._hyps[stage] = self._hyps[stage], []
        if not outputs or self.trainer.sanity_checking:
            return
        index = torch.cat([o[0] for o in outputs]).tolist()
        ids = [row for o in outputs for row in o[1]]
        references = self.trainer.datamodule.references(stage)
        refs = [references[i] for i in index]
        hyps = [self.vocab.decode(row.tolist()).split() for row in ids]
        scores = self.score(hyps, refs)
        self.log_dict({f"{stage}/{k}": v for k, v in scores.items()}, prog_bar=stage == "val")
        self.results[stage] = {"values": scores, "index": index, "hypotheses": hyps}

    def on_validation_epoch_end(self) -> None:
        self._finish("val")
        result = self.results.get("val")
        tb = next((lg for lg in self.loggers if isinstance(lg, TensorBoardLogger)), None)
        if result is None or tb is None or self.trainer.sanity_checking or not self.trainer.is_global_zero:
            return
        n = min(8, len(result["index"]))
        split = self.trainer.datamodule.splits["val"]
        shown = result["index"][:n]
        fig = caption_grid_figure(split.images[shown], [" ".join(h) for h in result["hypotheses"][:n]],
                                  [split.captions[i][0] for i in shown])
        tb.experiment.add_figure("val/captions", fig, global_step=self.global_step)

    def on_test_epoch_end(self) -> None:
        self._finish("test")

    @torch.inference_mode()
    def image_features(self, loader: Iterable[tuple[Tensor, Tensor]]) -> Tensor:
        """The backbone's average-pooled feature of every image a loader yields, in order (the nearest baseline's space)."""
        was_training = self.training
        self.eval()
        pooled = [self.encoder(x.to(self.device))[1].mean(1).float().cpu() for x, _ in loader]
        self.train(was_training)
        return torch.cat(pooled)

    def baseline_scores(self, datamodule: Any, split: str) -> dict[str, float]:
        """BLEU-4 and CIDEr-D of the blind and nearest-neighbour baselines on `split`, built from the train split."""
        train_refs = datamodule.references("train")
        refs = datamodule.references(split)
        blind, _ = best_blind_caption([c for caps in train_refs for c in caps], train_refs, candidates=None)
        nearest = nearest_neighbour_captions(
            self.image_features(datamodule.eval_dataloader("train")), train_refs,
            self.image_features(datamodule.eval_dataloader(split)),
        )
        scores = {}
        for name, hyps in (("blind", [blind] * len(refs)), ("nearest", nearest)):
            scores[f"{split}/baseline_{name}_bleu4"] = corpus_bleu(hyps, refs)["bleu4"]
            scores[f"{split}/baseline_{name}_cider"] = cider_d(hyps, refs)[0]
        log.info("%s blind caption: %r", split, " ".join(blind))
        return scores

    def write_outputs(self, out_dir: Path, stage: str, datamodule: Any) -> tuple[dict[str, float], dict[str, Any]]:
        """captions_<stage>.csv (image, generated, first reference); on test also the baselines' scores."""
        result = self.results.get(stage)
        if not result:
            return {}, {}
        split = datamodule.splits[stage]
        rows = [[split.names[i], " ".join(h), split.captions[i][0]] for i, h in zip(result["index"], result["hypotheses"])]
        atomic_write_csv(Path(out_dir) / f"captions_{stage}.csv", ["image", "generated", "reference"], rows)
        return (self.baseline_scores(datamodule, stage) if stage == "test" else {}), {}

    def configure_optimizers(self) -> Any:
        head = [p for n, p in self.named_parameters() if p.requires_grad and not n.startswith("encoder.backbone.")]
        backbone = [p for p in self.encoder.backbone.parameters() if p.requires_grad]
        groups = [{"params": head}]
        if backbone:
            groups.append({"params": backbone, "lr_scale": self.hparams.encoder_lr_scale})
        optimizer = scale_group_lrs(self.optimizer_factory(groups))
        return optimizer_config(self.trainer, optimizer, self.scheduler_factory)


def _decoder_dims(decoder: dict[str, Any], embed_dim: int, feature_dim: int) -> dict[str, int]:
    """The encoder sizes a decoder config needs: the global feature size (RNN) or the map's channels (attention)."""
    target = str(decoder.get("_target_", ""))
    return {"feature_dim": feature_dim} if target.endswith("AttentionDecoder") else {"image_dim": embed_dim}
