"""The LR schedule against PySlowFast's formula, and PreciseBN against the
true statistics of the batches it saw (1 and 2 processes)."""
import math
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper
from mmaction.registry import PARAM_SCHEDULERS
from torch import nn

from conftest import ROOT
from x3d_plugin.engine.hooks.precise_bn import update_bn_stats


def slowfast_lr(epoch, base_lr, max_epoch, warmup_epochs, warmup_start):
    """PySlowFast lr_policy.get_lr_at_epoch for LR_POLICY='cosine'
    (COSINE_END_LR 0, COSINE_AFTER_WARMUP False), written out here."""

    def cosine(e):
        return base_lr * (math.cos(math.pi * e / max_epoch) + 1.0) * 0.5

    lr = cosine(epoch)
    if epoch < warmup_epochs:
        lr_end = cosine(warmup_epochs)
        alpha = (lr_end - warmup_start) / warmup_epochs
        lr = epoch * alpha + warmup_start
    return lr


@pytest.mark.parametrize('config, base_lr, epochs, start', [
    ('x3d_m_k400.py', 0.1, 300, 0.01),
    ('x3d_l_k400.py', 0.05, 256, 0.01),
])
def test_schedule_follows_pyslowfast(config, base_lr, epochs, start):
    cfg = Config.fromfile(str(ROOT / 'configs' / config))
    assert cfg.optim_wrapper.optimizer.lr == base_lr
    assert cfg.train_cfg.max_epochs == epochs
    model = nn.Linear(2, 2)
    optim = build_optim_wrapper(model, cfg.optim_wrapper)
    epoch_length = 10
    # As MMEngine's runner builds it from the config.
    scheduler = PARAM_SCHEDULERS.build(
        cfg.param_scheduler[0],
        default_args=dict(optimizer=optim, epoch_length=epoch_length))
    checks = {0: None, 5: None, 175: None, 349: None, 350: None,
              351: None, 1500: None, epochs * epoch_length - 1: None}
    for it in range(epochs * epoch_length):
        if it in checks:
            checks[it] = optim.param_groups[0]['lr']
        optim.step()
        scheduler.step()
    for it, lr in checks.items():
        expected = slowfast_lr(it / epoch_length, base_lr, epochs, 35, start)
        assert lr == pytest.approx(expected, rel=1e-9, abs=1e-12), it
    assert checks[0] == pytest.approx(start)
    # Warm-up rises to the cosine's value at epoch 35, then the same cosine
    # goes on (no restart from the base LR).
    assert checks[349] < checks[350] > checks[351]
    assert checks[350] == pytest.approx(
        base_lr * 0.5 * (1 + math.cos(math.pi * 35 / epochs)))


def test_schedule_options_in_configs():
    cfg = Config.fromfile(str(ROOT / 'configs' / 'x3d_m_k400.py'))
    opt = cfg.optim_wrapper.optimizer
    assert (opt.type, opt.momentum, opt.nesterov, opt.weight_decay) == (
        'SGD', 0.9, True, 5e-5)
    assert cfg.optim_wrapper.paramwise_cfg.norm_decay_mult == 0.0
    assert cfg.auto_scale_lr == dict(enable=True, base_batch_size=128)
    model = nn.Sequential(nn.Conv3d(3, 4, 1), nn.BatchNorm3d(4))
    optim = build_optim_wrapper(model, cfg.optim_wrapper)
    decay = {id(p): g['weight_decay'] for g in optim.param_groups
             for p in g['params']}
    assert decay[id(model[0].weight)] == 5e-5
    assert decay[id(model[1].weight)] == 0 and decay[id(model[1].bias)] == 0


def small_net():
    return nn.Sequential(
        nn.Conv3d(3, 4, 3, padding=1), nn.BatchNorm3d(4), nn.ReLU(),
        nn.Conv3d(4, 5, 1), nn.BatchNorm3d(5))


def true_stats(net, batches, layer):
    """Mean and unbiased variance of everything `layer` received, from the
    concatenated inputs."""
    seen = []
    handle = layer.register_forward_pre_hook(
        lambda m, a: seen.append(a[0].detach().clone()))
    net.train()
    with torch.no_grad():
        for b in batches:
            net(b)
    handle.remove()
    x = torch.cat(seen).transpose(0, 1).reshape(layer.num_features, -1)
    return x.double().mean(1), x.double().var(1, unbiased=True)


def test_precise_bn_equals_true_statistics():
    net = small_net()
    batches = [torch.randn(3, 3, 2, 5, 5) * (i + 1) + i for i in range(6)]
    # Reference stats taken with a copy (train mode updates its own buffers).
    import copy
    expected = {}
    for idx in (1, 4):
        ref = copy.deepcopy(net)
        expected[idx] = true_stats(ref, batches[:5], ref[idx])
    net.train()
    used = update_bn_stats(net, iter(batches), net, num_iters=5)
    assert used == 5
    for idx, (mean, var) in expected.items():
        torch.testing.assert_close(net[idx].running_mean.double(), mean,
                                   rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(net[idx].running_var.double(), var,
                                   rtol=1e-5, atol=1e-5)


def test_precise_bn_two_processes(tmp_path):
    """Each rank sees its own batches; both end with the statistics of all
    of them."""
    script = tmp_path / 'pbn.py'
    script.write_text(textwrap.dedent(f"""
        import sys, torch
        sys.path[:0] = [{str(ROOT / 'tests')!r}, {str(ROOT / 'tests' / 'engine')!r}]
        import x3d_plugin
        from mmengine.dist import get_rank
        from test_schedule_and_precise_bn import small_net, true_stats
        from x3d_plugin.engine.hooks.precise_bn import update_bn_stats
        # torchrun's environment; MMEngine's init_dist needs CUDA.
        torch.distributed.init_process_group('gloo')
        torch.manual_seed(0)
        net = small_net()
        gen = torch.Generator().manual_seed(1)
        batches = {{r: [torch.randn(2, 3, 2, 4, 4, generator=gen) * (r + 1)
                        for _ in range(3)] for r in (0, 1)}}
        import copy
        ref = copy.deepcopy(net)
        mean, var = true_stats(ref, batches[0] + batches[1], ref[4])
        net.train()
        update_bn_stats(net, iter(batches[get_rank()]), net, num_iters=3)
        ok = (torch.allclose(net[4].running_mean.double(), mean, atol=1e-5)
              and torch.allclose(net[4].running_var.double(), var,
                                 atol=1e-5))
        torch.save(dict(ok=ok, mean=net[4].running_mean),
                   {str(tmp_path)!r} + f'/rank{{get_rank()}}.pt')
    """))
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS='1')
    proc = subprocess.run([
        sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node=2',
        '--master_port=29632', str(script)
    ], capture_output=True, text=True, env=env, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0 = torch.load(tmp_path / 'rank0.pt', weights_only=True)
    r1 = torch.load(tmp_path / 'rank1.pt', weights_only=True)
    assert r0['ok'] and r1['ok']
    torch.testing.assert_close(r0['mean'], r1['mean'])
