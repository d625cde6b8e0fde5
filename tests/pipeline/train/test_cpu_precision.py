"""bf16 autocast on CPU: the network runs in bf16, the loss stays float32."""

from __future__ import annotations

import torch

from radseg import keys
from radseg.configs.schema import TrainConfig
from radseg.pipeline.train.loop import _train_step
from radseg.pipeline.train.losses import build_loss


class _Recorder(torch.nn.Module):
    """A 1x1x1 conv that records the dtype of what it returns."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv3d(1, 3, 1)
        self.dtypes: list[torch.dtype] = []

    def forward(self, x):
        out = self.conv(x)
        self.dtypes.append(out.dtype)
        return out


def _step(amp: torch.dtype | None, channels_last: bool = False) -> tuple[_Recorder, torch.Tensor]:
    torch.manual_seed(0)
    network = _Recorder()
    cfg = TrainConfig(roi_size=[8, 8, 8], batch_size=2)
    batch = {keys.IMAGE: torch.randn(2, 1, 8, 8, 8), keys.LABEL: torch.randint(0, 3, (2, 1, 8, 8, 8))}
    optimizer = torch.optim.SGD(network.parameters(), lr=0.1)
    loss = _train_step(network, batch, build_loss(cfg, 3), optimizer, cfg, torch.device("cpu"), amp, None,
                       channels_last)
    return network, loss.detach()


def test_bf16_autocast_on_cpu_keeps_the_loss_in_float32():
    network, loss = _step(torch.bfloat16)
    assert network.dtypes == [torch.bfloat16]
    assert loss.dtype == torch.float32
    assert network.conv.weight.dtype == torch.float32 and network.conv.weight.grad.dtype == torch.float32


def test_bf16_loss_is_close_to_float32_and_channels_last_is_exact():
    _, full = _step(None)
    _, half = _step(torch.bfloat16)
    _, last = _step(None, channels_last=True)
    assert abs(float(half) - float(full)) < 0.02 * float(full)
    assert abs(float(half) - float(full)) > 0  # bf16 really ran
    torch.testing.assert_close(last, full)
