"""Captioning as a task: it trains (cross-entropy, then optionally SCST as a second fit stage) and decodes;
`evaluation/` scores."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, ClassVar

import hydra
import torch
import torch.nn.functional as F
from lightning.pytorch.loggers import TensorBoardLogger
from torch import Tensor

from tincap.data.caption_datamodule import CaptionData, pad_groups
from tincap.data.vocab import Vocabulary
from tincap.evaluation.caption_metrics import CiderD
from tincap.evaluation.caption_scoring import (
    CaptionScorer,
    baseline_scores,
    write_captions_csv,
)
from tincap.evaluation.figures import caption_grid_figure
from tincap.models.backbone import Backbone
from tincap.models.caption_decoders import CaptionDecoder
from tincap.models.caption_encoder import CaptionEncoder
from tincap.models.caption_search import (
    beam_candidates,
    beam_search,
    caption_log_probs,
    greedy_decode,
    sample_captions,
)
from tincap.models.digest import state_digest
from tincap.runtime.checkpoint_io import read_checkpoint
from tincap.runtime.errors import InvalidInput
from tincap.tasks.gathering import gather_by_index
from tincap.tasks.schedules import optimizer_config, scale_group_lrs
from tincap.tasks.self_critical import ScstSettings, advantages, self_critical_loss
from tincap.tasks.task import FitStage, StageOutputs, Task

log = logging.getLogger(__name__)


def saved_vocabulary(ckpt: dict[str, Any]) -> dict[str, Any] | None:
    """The vocabulary a captioner checkpoint's datamodule saved as its state; None in one from before it was kept there."""
    return (ckpt.get(CaptionData.__qualname__) or {}).get("vocab")


class Captioner(Task):
    """Encoder (`net`, any tincap backbone) + decoder (`decoder` config) writing in `vocab`, which the checkpoint keeps
    as the datamodule's state."""

    data_type = CaptionData
    output_stages: ClassVar[tuple[str, ...]] = ("val", "test")
    evaluation_settings: ClassVar[tuple[str, ...]] = ("beam", "length_penalty")

    def __init__(
        self,
        net: Backbone,
        optimizer: Callable[..., torch.optim.Optimizer] | None,
        decoder: dict[str, Any],
        vocab: Vocabulary,
        scheduler: Callable[..., dict[str, Any]] | None = None,
        embed_dim: int = 256,
        freeze_encoder: bool = False,
        freeze_encoder_norms: bool = False,
        encoder_lr_scale: float = 0.1,
        beam_size: int = 3,
        val_beam_size: int = 1,
        length_penalty: float = 0.0,
        suppress_unk: bool = True,
        meteor: bool = True,
        scst: dict[str, Any] | None = None,
        model_cfg: dict[str, Any] | None = None,
        data_info: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["net", "optimizer", "scheduler", "vocab"], logger=False)
        self.vocab = vocab
        reads = hydra.utils.get_class(decoder["_target_"]).reads
        self.encoder = CaptionEncoder(net, reads, embed_dim, freeze=freeze_encoder,
                                      frozen_norms=freeze_encoder_norms)
        self.decoder: CaptionDecoder = hydra.utils.instantiate(
            decoder, vocab_size=len(vocab), input_dim=self.encoder.output_dim
        )
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.max_len = int((data_info or {}).get("max_len", 20))
        self.scst = ScstSettings(**(scst or {}))
        self.self_critical = self.scst.init_from is not None  # True while training by SCST instead of cross-entropy
        self._rewards: CiderD | None = None
        self._train_tokens: Tensor | None = None  # (N_train, K, T), for task.scst.ce_weight
        self._scorer: CaptionScorer | None = None
        self._hyps: dict[str, list[tuple[Tensor, Tensor]]] = {"val": [], "test": []}
        self.results: dict[str, dict[str, Any]] = {}

    @property
    def net(self) -> Backbone:
        return self.encoder.backbone

    @property
    def unk_id(self) -> int | None:
        """The id never generated (`<unk>` matches no reference word), or None when task.suppress_unk=false."""
        return self.vocab.unk_id if self.hparams.get("suppress_unk", True) else None

    def setup(self, stage: str) -> None:
        """Fitting: start from task.scst.init_from's weights (evaluating an SCST checkpoint keeps its own); with a frozen
        encoder, feed the datamodule's cached feature maps."""
        dm: CaptionData = self.trainer.datamodule
        if stage == "fit" and self.self_critical and self._rewards is None:
            self.begin_self_critical(self.scst.init_from)
        if self.encoder.freeze:
            self.encoder.backbone.to(memory_format=torch.channels_last)  # the layout its inputs come in
            dm.use_encoder(self.encoder.feature_map, state_digest(self.encoder.backbone))
            self.encoder.precomputed = True

    @classmethod
    def checkpoint_inputs(cls, ckpt: dict[str, Any], path: Path, key: str) -> dict[str, Any]:
        """The vocabulary the decoder writes in, which the checkpoint keeps as its datamodule's state."""
        vocab = saved_vocabulary(ckpt)
        if vocab is None:
            raise InvalidInput(f"{key}={path} is a captioner checkpoint from before the vocabulary was kept in the "
                               "datamodule's state; retrain it with this version (python train.py experiment=...)")
        return {"vocab": Vocabulary.from_state_dict(vocab)}

    def fit_stages(self) -> list[FitStage]:
        """Cross-entropy, then task.scst.epochs of SCST from its best checkpoint; with task.scst.init_from, SCST alone
        (`setup` starts it from that checkpoint)."""
        scst = FitStage("self-critical", self.scst.epochs, self.begin_self_critical, "task.scst.epochs")
        if self.scst.init_from is not None:
            return [scst]
        return [FitStage("cross-entropy"), *([scst] if self.scst.epochs else [])]

    def data_settings(self) -> dict[str, Any]:
        return {**super().data_settings(), "max_len": self.data_info["max_len"]}

    def adopt_data(self, datamodule: CaptionData, source: str) -> None:
        """Decode with the checkpoint's own words, whatever the new data's captions would build."""
        datamodule.load_state_dict({"vocab": self.vocab.state_dict()})

    def set_evaluation(self, name: str, value: Any) -> None:
        if name == "beam":
            self.hparams.beam_size = self.hparams.val_beam_size = int(value)
        else:
            self.hparams.length_penalty = float(value)

    def begin_self_critical(self, ckpt_path: str | None) -> None:
        """Switch to SCST from a cross-entropy checkpoint (None: the weights as they are): image batches, CIDEr-D
        rewards with the training set's document frequencies, and the constant task.scst.lr."""
        dm: CaptionData = self.trainer.datamodule
        if ckpt_path is not None:
            ckpt = read_checkpoint(Path(ckpt_path).expanduser(), "task.scst.init_from")
            words = (saved_vocabulary(ckpt) or {}).get("itos")
            if words != self.vocab.itos:
                raise InvalidInput(f"task.scst.init_from={ckpt_path}: its vocabulary differs from this run's "
                                   f"({len(words or [])} vs {len(self.vocab)} words); start SCST with the data "
                                   "settings (data.root, data.min_freq, data.split_seed) that checkpoint was trained with")
            self.load_state_dict(ckpt["state_dict"])
        self.self_critical = True
        dm.train_items = "images"
        self._rewards = CiderD(dm.references("train"))
        if self.scst.ce_weight > 0:  # the anchor's teacher-forced references, looked up by dataset index
            captions = dm.encoded_captions("train")
            self._train_tokens = pad_groups(captions, max(map(len, captions)))  # (N_train, K, T)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        if self.self_critical:
            return self._self_critical_step(*batch)
        x, tokens = batch
        loss, aux = self._cross_entropy(self.encoder(x), tokens)
        self.log("train/loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=len(x))
        return loss + aux

    def _cross_entropy(self, image: Tensor, tokens: Tensor) -> tuple[Tensor, Tensor]:
        """Teacher-forced cross-entropy of the reference tokens (N, T), or (N, K, T) with padding rows for images with
        fewer than K captions, and the decoder's auxiliary loss."""
        if tokens.dim() == 3:  # (N, K, T): all K captions of each image share one encoder pass
            keep = tokens.flatten(0, 1)[:, 0] != self.vocab.pad_id
            image = image.repeat_interleave(tokens.shape[1], 0)[keep]
            tokens = tokens.flatten(0, 1)[keep]
        logits, aux = self.decoder.forward_with_aux(image, tokens)  # (N, T-1, V)
        loss = F.cross_entropy(logits.flatten(0, 1).float(), tokens[:, 1:].flatten(), ignore_index=self.vocab.pad_id)
        return loss, aux

    def _words(self, ids: Tensor) -> list[list[str]]:
        return [self.vocab.decode(row.tolist()).split() for row in ids]

    def _self_critical_step(self, x: Tensor, index: Tensor) -> Tensor:
        """Sample task.scst.samples captions per image, reward each by CIDEr-D against the image's training captions,
        and push up those that beat the baseline."""
        k = self.scst.samples
        image = self.encoder(x)
        if self.scst.candidates == "beam":  # the k likeliest captions, then their log-probs with gradients
            ids = beam_candidates(self.decoder, image.detach(), k, self.max_len, unk_id=self.unk_id)  # (N * k, L)
            logps = caption_log_probs(self.decoder, image.repeat_interleave(k, 0), ids, unk_id=self.unk_id)
        else:
            ids, logps = sample_captions(self.decoder, image, k, self.max_len, unk_id=self.unk_id,
                                         temperature=self.scst.temperature)  # (N * k, L)
        images = index.repeat_interleave(k).tolist()
        rewards = torch.tensor(self._rewards.corpus_scores(self._words(ids), images), device=logps.device).view(-1, k)
        greedy_rewards = None
        if self.scst.baseline == "greedy":  # decoded by the same network (dropout too) as the samples it judges
            greedy = greedy_decode(self.decoder, image.detach(), self.max_len, unk_id=self.unk_id)
            greedy_rewards = torch.tensor(self._rewards.corpus_scores(self._words(greedy), index.tolist()),
                                          device=logps.device)
        loss = self_critical_loss(logps, ids, advantages(rewards, greedy_rewards).flatten(), self.vocab.pad_id)
        if self.scst.ce_weight > 0:
            ce, aux = self._cross_entropy(image, self._train_tokens[index.cpu()].to(image.device))
            self.log("train/ce", ce, on_step=False, on_epoch=True, batch_size=len(x))
            loss = loss + self.scst.ce_weight * (ce + aux)
        self.log("train/reward", rewards.mean(), on_step=False, on_epoch=True, prog_bar=True, batch_size=len(x))
        self.log("train/loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=len(x))
        return loss

    def generate(self, x: Tensor, beam_size: int = 1) -> Tensor:
        """Token ids (N, <= max_len) of the best caption per image: greedy for beam 1, else beam search."""
        image = self.encoder(x)
        if beam_size <= 1:
            return greedy_decode(self.decoder, image, self.max_len, unk_id=self.unk_id)
        return beam_search(self.decoder, image, beam_size, self.max_len, self.hparams.length_penalty,
                           unk_id=self.unk_id)

    def captions(self, x: Tensor, beam_size: int = 1) -> list[str]:
        return [self.vocab.decode(row.tolist()) for row in self.generate(x, beam_size)]

    def _eval_step(self, stage: str, batch: tuple[Tensor, Tensor]) -> None:
        x, index = batch
        beam = self.hparams.val_beam_size if stage == "val" else self.hparams.beam_size
        ids = self.generate(x, beam)
        padded = ids.new_full((len(ids), self.max_len), self.vocab.pad_id)  # one width, so processes can gather
        padded[:, : ids.size(1)] = ids
        self._hyps[stage].append((index, padded))

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._eval_step("val", batch)

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._eval_step("test", batch)

    def _finish(self, stage: str) -> None:
        """Gather every process's captions, then score the whole split identically on each (no metric sync needed)."""
        outputs, self._hyps[stage] = self._hyps[stage], []
        if self.trainer.sanity_checking:
            return
        local_index = torch.cat([o[0] for o in outputs]) if outputs else torch.zeros(0, dtype=torch.long)
        local_ids = torch.cat([o[1] for o in outputs]) if outputs else torch.zeros(0, self.max_len, dtype=torch.long)
        index, ids = gather_by_index(local_index.to(self.device), local_ids.to(self.device))
        if len(index) == 0:
            return
        dm: CaptionData = self.trainer.datamodule
        if self._scorer is None:
            self._scorer = CaptionScorer(dm.references("train"))
        references = dm.references(stage)
        index = index.cpu().tolist()
        hyps = self._words(ids.cpu())
        scores = self._scorer(hyps, [references[i] for i in index],
                              with_meteor=stage == "test" and self.hparams.get("meteor", True))
        shown = ("bleu4", "cider") if stage == "val" else ()
        self.log_dict({f"{stage}/{k}": v for k, v in scores.items() if k in shown}, prog_bar=True)
        self.log_dict({f"{stage}/{k}": v for k, v in scores.items() if k not in shown})
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
    def pooled_features(self, loader: Iterable[tuple[Tensor, Tensor]], advance: Callable[[int], None]) -> Tensor:
        """The backbone's average-pooled feature of every image a loader yields, in order (the nearest baseline's space)."""
        was_training = self.training
        self.eval()
        pooled = []
        for x, _ in loader:
            pooled.append(self.encoder.pooled(x.to(self.device)).float().cpu())
            advance(len(x))
        self.train(was_training)
        return torch.cat(pooled)

    def write_outputs(self, out_dir: Path, stage: str, datamodule: CaptionData) -> StageOutputs:
        """captions_<stage>.csv (image, generated, first reference); on test also the baselines' scores."""
        result = self.results.get(stage)
        if not result:
            return StageOutputs()
        split = datamodule.splits[stage]
        write_captions_csv(Path(out_dir) / f"captions_{stage}.csv", [split.names[i] for i in result["index"]],
                           result["hypotheses"], [split.captions[i][0] for i in result["index"]])
        if stage != "test":
            return StageOutputs()
        skipped = {f"{stage}/meteor_skipped": self._scorer.meteor_skipped} if self._scorer.meteor_skipped else {}
        return StageOutputs(metrics={**skipped, **baseline_scores(
            self.pooled_features, datamodule.eval_dataloader("train", share=False),
            datamodule.eval_dataloader(stage, share=False), datamodule.references("train"), datamodule.references(stage),
            stage)})

    def configure_optimizers(self) -> Any:
        head = [p for n, p in self.named_parameters() if p.requires_grad and not n.startswith("encoder.backbone.")]
        backbone = [p for p in self.encoder.backbone.parameters() if p.requires_grad]
        groups = [{"params": head}]
        if backbone:
            groups.append({"params": backbone, "lr_scale": self.hparams.encoder_lr_scale})
        if self.self_critical:
            return scale_group_lrs(self.optimizer_factory(groups, lr=self.scst.lr))
        optimizer = scale_group_lrs(self.optimizer_factory(groups))
        return optimizer_config(self.trainer, optimizer, self.scheduler_factory)
