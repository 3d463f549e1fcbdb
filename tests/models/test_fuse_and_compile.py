"""Conv+BN folding for inference, and torch.compile without graph breaks."""
from types import SimpleNamespace

import pytest
import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from utils_helpers import randomize
from x3d_plugin.engine.hooks import FuseConvBNHook
from x3d_plugin.models import X3D, X3DHead
from x3d_plugin.models import fold_bn, fuse_conv_bn


class Net(nn.Module):

    def __init__(self, arch='xs', **kwargs):
        super().__init__()
        self.backbone = X3D(arch=arch, **kwargs)
        self.head = X3DHead(7, self.backbone.stage_widths[-1],
                            self.backbone.inner_widths[-1])

    def forward(self, x):
        return self.head(self.backbone(x))


def count_bn(model):
    return sum(isinstance(m, _BatchNorm) for m in model.modules())


@pytest.mark.parametrize('arch', ['xs', 'l'])
def test_folded_model_gives_the_same_outputs(arch):
    torch.manual_seed(0)
    net = randomize(Net(arch)).eval()
    x = torch.randn(2, 3, 4, 48, 48)
    with torch.no_grad():
        before = net(x)
        features = net.backbone(x)
    bn_layers = count_bn(net)
    blocks = sum(len(getattr(net.backbone, n)) for n in net.backbone.layer_names)
    # 3 per block, 1 per stage's shortcut, the stem and the head: all of them.
    assert bn_layers == 3 * blocks + 4 + 1 + 1
    fuse_conv_bn(net)
    assert net.conv_bn_fused == bn_layers and count_bn(net) == 0
    with torch.no_grad():
        after = net(x)
        fused_features = net.backbone(x)
    assert torch.allclose(after, before, rtol=1e-4, atol=1e-4 *
                          before.abs().max().item())
    assert torch.allclose(fused_features, features, rtol=1e-4, atol=1e-5)
    # The check can fail: the outputs depend on the BN statistics.
    assert (before - net.head.fc_cls.bias).abs().max() > 1e-2
    # Channels-last-3d survives folding.
    assert fused_features.is_contiguous(memory_format=torch.channels_last_3d)
    # Folding twice changes nothing.
    fuse_conv_bn(net)
    assert net.conv_bn_fused == 0


def test_fold_bn_single_layer_with_bias_and_groups():
    torch.manual_seed(1)
    conv = nn.Conv3d(6, 6, 3, padding=1, groups=6, bias=True)
    bn = randomize(nn.Sequential(nn.BatchNorm3d(6)))[0].eval()
    x = torch.randn(2, 6, 3, 5, 5)
    with torch.no_grad():
        torch.testing.assert_close(
            fold_bn(conv, bn)(x), bn(conv(x)), rtol=1e-5, atol=1e-5)


def test_folded_channelwise_conv_stays_on_the_plugin_kernel(monkeypatch):
    # The stem's 5x1x1 channelwise kernel is many times faster on the
    # plugin's op than in oneDNN: folding keeps the class, and the op runs
    # with the folded bias added after it.
    import importlib
    # The package's attribute of that name is the function.
    cw = importlib.import_module('x3d_plugin.ops.channelwise_conv3d')
    from x3d_plugin.ops import (ChannelwiseConv3d, extension_error,
                                fast_channelwise_available)
    # The extension is built wherever the tests run (setup_env.sh).
    assert fast_channelwise_available(), extension_error()
    torch.manual_seed(2)
    conv = ChannelwiseConv3d(16, (5, 1, 1), padding=(2, 0, 0)).to(
        memory_format=torch.channels_last_3d)
    bn = randomize(nn.Sequential(nn.BatchNorm3d(16)))[0].eval()
    fused = fold_bn(conv, bn)
    assert type(fused) is ChannelwiseConv3d and fused.bias is not None
    calls = []
    real_op = cw._cpu_op
    monkeypatch.setattr(cw, '_cpu_op',
                        lambda *a: calls.append(1) or real_op(*a))
    x = torch.randn(2, 16, 6, 5, 5).to(memory_format=torch.channels_last_3d)
    with torch.no_grad():
        torch.testing.assert_close(fused(x), bn(conv(x)), rtol=1e-5,
                                   atol=1e-5)
    assert calls  # the op ran (the policy picks it for kt x 1 x 1)
    # With a bias the op's gradients are nn.Conv3d's.
    x.requires_grad_()
    fused(x).square().sum().backward()
    grads = (x.grad.clone(), fused.weight.grad.clone(),
             fused.bias.grad.clone())
    x.grad = None
    fused.zero_grad()
    nn.Conv3d.forward(fused, x).square().sum().backward()
    for got, want in zip(grads, (x.grad, fused.weight.grad,
                                 fused.bias.grad)):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_folding_needs_eval_mode():
    with pytest.raises(RuntimeError, match='eval mode'):
        fuse_conv_bn(Net().train())


def test_fuse_hook_folds_the_model_before_testing():
    net = randomize(Net()).eval()
    messages = []
    runner = SimpleNamespace(
        model=net.train(),  # the hook puts it in eval mode itself
        logger=SimpleNamespace(info=messages.append))
    FuseConvBNHook().before_test(runner)
    assert count_bn(net) == 0 and not net.training
    assert 'folded' in messages[0]


@pytest.mark.parametrize('with_cp', [False, True])
@pytest.mark.parametrize('training', [True, False])
def test_compiles_without_graph_breaks(with_cp, training):
    """Dynamo captures backbone and head in one graph, train and eval,
    with and without gradient checkpointing."""
    net = Net(with_cp=with_cp).train(training)
    explanation = torch._dynamo.explain(net)(torch.randn(1, 3, 4, 32, 32))
    assert explanation.graph_break_count == 0, explanation.break_reasons
    assert explanation.graph_count == 1
