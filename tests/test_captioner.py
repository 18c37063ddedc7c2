"""The captioner end to end (issue 3 work in progress): every decoder trains one batch and is scored."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tincap.commands.train import train
from tincap.tasks.captioner import Captioner

RNN_SIZES = ["task.decoder.embed_dim=32", "task.decoder.hidden_dim=32"]
DECODERS = {
    "rnn": ["task/decoder=rnn", *RNN_SIZES],
    "gru": ["task/decoder=gru", "task.decoder.image_input=first_step", *RNN_SIZES],
    "lstm": ["task/decoder=lstm", *RNN_SIZES],
    "attention": ["task/decoder=attention", "task.decoder.attention_dim=32", *RNN_SIZES],
    "transformer": ["task/decoder=transformer", "task.decoder.d_model=32", "task.decoder.heads=2",
                    "task.decoder.ff_dim=64", "task.decoder.num_layers=1"],
}


@pytest.mark.parametrize("decoder", sorted(DECODERS))
def test_fast_dev_run_each_decoder(compose_train, decoder: str) -> None:
    cfg = compose_train("experiment=shapes_attention", "debug=fdr", "data.shapes_per_class=4", "model.widths=[8,16,32,64]",
                        "task.embed_dim=32", "task.meteor=false", *DECODERS[decoder])
    metrics, objects = train(cfg)
    for key in ("val/bleu4", "val/cider", "val/rouge_l", "val/cosine", "test/bleu1", "test/bleu4", "test/cider",
                "test/rouge_l"):
        low = -1 if "cosine" in key else 0  # a cosine of averaged embeddings can be negative
        assert key in metrics and low <= metrics[key] <= (10 if "cider" in key else 1), key
    task: Captioner = objects["task"]
    captions = task.captions(torch.zeros(2, 3, 64, 64), beam_size=2)
    assert len(captions) == 2 and all(isinstance(c, str) for c in captions)


def test_coco_folder_trains_one_batch(compose_train, coco_root: Path) -> None:
    root = coco_root
    cfg = compose_train("experiment=shapes_attention", "data=captions", f"data.root={root}", "data.image_size=64",
                        "debug=fdr", "model.widths=[8,16,32,64]", "task.decoder.hidden_dim=32", "data.min_freq=1")
    metrics, objects = train(cfg)
    dm = objects["datamodule"]
    sizes = {k: len(v.names) for k, v in dm.splits.items()}
    assert sum(sizes.values()) == 80 and min(sizes.values()) > 0
    assert "test/bleu4" in metrics
    assert len(dm.vocab) > 4 and Path(cfg.paths.output_dir, "metrics.json").is_file()


@pytest.mark.parametrize("model", ["resnet", "alexnet"])
def test_other_backbones_encode(compose_train, model: str) -> None:
    cfg = compose_train("data=shapes_caption", "task=captioner", "debug=fdr", "data.shapes_per_class=4", f"model={model}",
                        "task.decoder.embed_dim=32", "task.decoder.hidden_dim=32", "task.embed_dim=32",
                        "task/decoder=lstm", "data.image_size=32")
    metrics, objects = train(cfg)
    assert "test/bleu4" in metrics and objects["task"].encoder.feature_dim == objects["task"].net.feature_dim


def test_mlp_cannot_encode_for_captions(compose_train) -> None:
    cfg = compose_train("data=shapes_caption", "task=captioner", "debug=fdr", "data.shapes_per_class=4", "model=mlp",
                        "task/decoder=lstm")
    from hydra.errors import InstantiationException

    # refused as the captioner is built (the contract's `spatial`), before any data is read
    with pytest.raises(InstantiationException, match=r"MLP has no spatial feature map \(N, C, h, w\) for a caption encoder"):
        train(cfg)
