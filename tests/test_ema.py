from __future__ import annotations

import torch
from torch import nn

from uncol.ema import EMA


def test_ema_update_follows_formula():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    ema = EMA(net, decay=0.99)
    before = [p.clone() for p in ema.module.parameters()]
    with torch.no_grad():
        for p in net.parameters():
            p.add_(1.0)
        net[1].running_mean.fill_(5.0)
    alpha = ema.update(net, step=1000)
    assert alpha == 0.99
    for b, e, p in zip(before, ema.module.parameters(), net.parameters(), strict=True):
        torch.testing.assert_close(e, 0.99 * b + 0.01 * p)
    # buffers are copied, not averaged
    assert torch.all(ema.module[1].running_mean == 5.0)


def test_ema_warm_start_and_frozen():
    net = nn.Linear(2, 2)
    ema = EMA(net, decay=0.99)
    assert ema.update(net, step=0) == 0.0  # first step copies the student
    assert ema.update(net, step=1) == 0.5
    assert all(not p.requires_grad for p in ema.module.parameters())
    ema.train()
    assert not ema.module.training


def test_ema_without_warm_up_uses_the_decay_from_the_first_step():
    net = nn.Linear(2, 2)
    ema = EMA(net, decay=0.99)
    assert ema.update(net, step=0, warmup=False) == 0.99
    assert ema.update(net, step=0) == 0.0
