"""Captioning as a LightningModule: a classifier backbone encodes, an RNN/attention decoder writes, BLEU/CIDEr score."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import hydra
import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tincap.data.vocab import Vocabulary
from tincap.evaluation.caption_metrics import cider_d, corpus_bleu, embedding_lookup, mean_cosine
from tincap.models.caption_encoder import CaptionEncoder
from tincap.models.decoding import beam_search, greedy_decode
from tincap.tasks.schedules import optimizer_config


class Captioner(L.LightningModule):
    """Encoder (`net`, any tincap backbone) + decoder (`decoder` config); the vocabulary travels in the checkpoint."""

    def __init__(
        self,
        net: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer] | None,
        decoder: dict[str, Any],
        scheduler: Callable[..., dict[str, Any]] | None = None,
        embed_dim: int = 256,
        freeze_encoder: bool = False,
        encoder_lr_scale: float = 0.1,
        beam_size: int = 3,
        length_penalty: float = 0.0,
        grad_clip: float = 5.0,
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

    @property
    def net(self) -> nn.Module:
        return self.encoder.backbone

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, tokens = batch
        global_feat, spatial = self.encoder(x)
        logits, aux = self.decoder.forward_with_aux(global_feat, spatial, tokens)
        loss = F.cross_entropy(logits.flatten(0, 1).float(), tokens[:, 1:].flatten(), ignore_index=self.vocab.pad_id)
        self.log("train/loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=len(x))
        return loss + aux

    def generate(self, x: Tensor, beam_size: int = 1) -> Tensor:
        """Token ids (N, <= max_len) of the best caption per image: greedy for beam 1, else beam search."""
        global_feat, spatial = self.encoder(x)
        if beam_size <= 1:
            return greedy_decode(self.decoder, global_feat, spatial, self.max_len)
        return beam_search(self.decoder, global_feat, spatial, beam_size, self.max_len, self.hparams.length_penalty)

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

    def on_test_epoch_end(self) -> None:
        self._finish("test")

    def configure_optimizers(self) -> Any:
        base = self.optimizer_factory.keywords.get("lr", 1e-3) if hasattr(self.optimizer_factory, "keywords") else 1e-3
        head = [p for n, p in self.named_parameters() if p.requires_grad and not n.startswith("encoder.backbone.")]
        backbone = [p for p in self.encoder.backbone.parameters() if p.requires_grad]
        groups = [{"params": head}]
        if backbone:
            groups.append({"params": backbone, "lr": base * self.hparams.encoder_lr_scale})
        optimizer = self.optimizer_factory(groups)
        return optimizer_config(self.trainer, optimizer, self.scheduler_factory)


def _decoder_dims(decoder: dict[str, Any], embed_dim: int, feature_dim: int) -> dict[str, int]:
    """The encoder sizes a decoder config needs: the global feature size (RNN) or the map's channels (attention)."""
    target = str(decoder.get("_target_", ""))
    return {"feature_dim": feature_dim} if target.endswith("AttentionDecoder") else {"image_dim": embed_dim}
