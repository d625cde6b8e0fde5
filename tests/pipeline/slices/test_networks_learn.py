"""The seed's SimpleCNN and the CNN+RNN train a few steps on CPU and their loss falls."""

from __future__ import annotations

import pytest
import torch

from radseg import keys
from radseg.configs import load_config
from radseg.networks import build_network
from radseg.pipeline.slices.fit import SliceLoss
from radseg.pipeline.train.loop import train_one_epoch
from radseg.pipeline.train.schedule import build_optimizer


def _slices(count: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Noise slices; positives hold a bright disc (a toy liver) somewhere."""
    labels = torch.randint(0, 2, (count,), generator=generator)
    images = torch.randn(count, 1, 32, 32, generator=generator) * 0.5
    yy, xx = torch.meshgrid(torch.arange(32), torch.arange(32), indexing="ij")
    for i in torch.nonzero(labels).flatten():
        cy, cx = torch.randint(8, 24, (2,), generator=generator)
        images[i, 0][(yy - cy) ** 2 + (xx - cx) ** 2 < 36] += 2.0
    return images, labels


@pytest.mark.parametrize("name", ["simple_cnn2d", "cnn_rnn2d"])
def test_loss_falls_in_a_few_cpu_steps(name):
    overrides = ["train.roi_size=[32,32]", f"network.name={name}", "train.iterations_per_epoch=30",
                 "train.warmup_epochs=0", "train.schedule=constant", "train.learning_rate=0.003",
                 "train.max_epochs=1", "network.params={widths: [8, 16]}"]
    cfg = load_config("slices", overrides)
    torch.manual_seed(0)
    network = build_network(cfg.network, in_channels=1, out_channels=2)
    generator = torch.Generator().manual_seed(0)
    sequence = name == "cnn_rnn2d"

    def batch():
        images, labels = _slices(32, generator)
        if sequence:  # 4 sequences of 8 slices
            images, labels = images.view(4, 8, 1, 32, 32), labels.view(4, 8)
        return {keys.IMAGE: images, keys.LABEL: labels}

    held_out = batch()
    loss_fn = SliceLoss()

    def held_out_loss() -> float:
        network.eval()
        with torch.no_grad():
            return float(loss_fn(network(held_out[keys.IMAGE]), held_out[keys.LABEL]))

    before = held_out_loss()
    optimizer = build_optimizer(cfg.train, network.parameters())
    metrics = train_one_epoch(network, (batch() for _ in range(30)), loss_fn, optimizer, cfg.train,
                              start_iteration=0, device=torch.device("cpu"), progress=False)
    after = held_out_loss()
    assert metrics["iterations"] == 30
    assert after < 0.7 * before, (before, after)
