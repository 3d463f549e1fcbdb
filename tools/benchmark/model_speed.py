"""Train-step and inference speed of our X3D against MMAction2 1.2.0's X3D
carrying the same weights, side by side in one process.

Each configuration is timed in turn within every round (runs alternated),
after warm-up; the table shows the median over rounds in clips/s and the
ratio to MMAction2 at its defaults. Outputs are checked to agree (eval,
fp32, <= 1e-4) before anything is timed.

Example (the table in docs/benchmarks.md)::

    python tools/benchmark/model_speed.py --archs xs m --batch 4 --rounds 5
"""
import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from torch import nn  # noqa: E402

import x3d_plugin  # noqa: E402,F401
from x3d_plugin.models import x3d_recognizer_cfg  # noqa: E402
from x3d_plugin.utils.convert import convert_state_dict  # noqa: E402

CLIPS = {'xs': (4, 160), 's': (13, 160), 'm': (16, 224), 'l': (16, 312)}
DEPTH = {'xs': 2.2, 's': 2.2, 'm': 2.2, 'l': 5.0}


class Net(nn.Module):
    """backbone + head as one module."""

    def __init__(self, backbone, head, channels_last_input=False):
        super().__init__()
        self.backbone, self.head = backbone, head
        self.channels_last_input = channels_last_input

    def forward(self, x):
        if self.channels_last_input:
            x = x.contiguous(memory_format=torch.channels_last_3d)
        return self.head(self.backbone(x))


def build_pair(arch, num_classes=400):
    """MMAction2's X3D and ours with the same (random) weights."""
    from mmaction.registry import MODELS
    from mmaction.utils import register_all_modules
    register_all_modules()
    theirs = MODELS.build(
        dict(
            type='Recognizer3D',
            backbone=dict(type='X3D', gamma_w=1, gamma_b=2.25,
                          gamma_d=DEPTH[arch]),
            cls_head=dict(type='X3DHead', in_channels=432,
                          num_classes=num_classes),
            data_preprocessor=dict(type='ActionDataPreprocessor')))
    theirs.init_weights()
    ours = MODELS.build(x3d_recognizer_cfg(arch, num_classes))
    converted = convert_state_dict(theirs.state_dict(), 'mmaction2')
    ours.load_state_dict(converted['state_dict'], strict=True)
    return theirs, ours


def variants(theirs, ours, device):
    """name -> (model, channels-last input?) for every configuration."""
    import copy
    out = {}
    m = copy.deepcopy(theirs)
    out['mmaction2 default'] = Net(m.backbone, m.cls_head).to(device)
    m = copy.deepcopy(theirs)
    net = Net(m.backbone, m.cls_head, channels_last_input=True).to(device)
    out['mmaction2 + channels-last'] = net.to(
        memory_format=torch.channels_last_3d)
    m = copy.deepcopy(ours)
    out['ours default (channels-last)'] = Net(m.backbone,
                                              m.cls_head).to(device)
    m = copy.deepcopy(ours)
    m.backbone.channels_last = False
    out['ours contiguous'] = Net(m.backbone, m.cls_head).to(device)
    return out


def check_outputs(models, x):
    with torch.no_grad():
        outs = {n: m.eval()(x) for n, m in models.items()}
    ref = outs['mmaction2 default']
    for name, out in outs.items():
        diff = (out - ref).abs().max().item()
        if diff > 1e-4:
            raise SystemExit(f'{name} differs from MMAction2 by {diff:.2e}')
    return max((o - ref).abs().max().item() for o in outs.values())


def sync(device):
    if device.startswith('cuda'):
        torch.cuda.synchronize()


def time_train_step(model, x, y, optimizer, precision, device):
    model.train()
    sync(device)
    start = time.perf_counter()
    with torch.autocast(device.split(':')[0], dtype=precision,
                        enabled=precision != torch.float32):
        loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    sync(device)
    return time.perf_counter() - start


def time_inference(model, x, precision, device):
    model.eval()
    sync(device)
    start = time.perf_counter()
    with torch.no_grad(), torch.autocast(
            device.split(':')[0], dtype=precision,
            enabled=precision != torch.float32):
        model(x)
    sync(device)
    return time.perf_counter() - start


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--archs', nargs='+', default=['xs', 'm'],
                        choices=sorted(CLIPS))
    parser.add_argument('--batch', type=int, default=4)
    parser.add_argument('--rounds', type=int, default=5)
    parser.add_argument('--warmup', type=int, default=2)
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--precision', nargs='+', default=['fp32'],
                        choices=['fp32', 'bf16', 'fp16'])
    args = parser.parse_args(argv)
    dtypes = dict(fp32=torch.float32, bf16=torch.bfloat16,
                  fp16=torch.float16)
    torch.manual_seed(0)
    where = (torch.cuda.get_device_name() if 'cuda' in args.device else
             f'{torch.get_num_threads()} CPU threads')
    print(f'device: {args.device} ({where}), '
          f'torch {torch.__version__}, batch {args.batch}, '
          f'{args.rounds} rounds after {args.warmup} warm-up, median')
    rows = []
    for arch in args.archs:
        frames, size = CLIPS[arch]
        theirs, ours = build_pair(arch)
        models = variants(theirs, ours, args.device)
        x = torch.randn(args.batch, 3, frames, size, size,
                        device=args.device)
        y = torch.randint(0, 400, (args.batch, ), device=args.device)
        diff = check_outputs(models, x)
        for precision in args.precision:
            dtype = dtypes[precision]
            optims = {
                n: torch.optim.SGD(m.parameters(), lr=1e-3, momentum=0.9)
                for n, m in models.items()
            }
            train = {n: [] for n in models}
            infer = {n: [] for n in models}
            for r in range(args.warmup + args.rounds):
                for name, model in models.items():
                    t = time_train_step(model, x, y, optims[name], dtype,
                                        args.device)
                    i = time_inference(model, x, dtype, args.device)
                    if r >= args.warmup:
                        train[name].append(t)
                        infer[name].append(i)
            base_t = statistics.median(train['mmaction2 default'])
            base_i = statistics.median(infer['mmaction2 default'])
            for name in models:
                t, i = statistics.median(train[name]), statistics.median(
                    infer[name])
                rows.append((f'X3D-{arch.upper()} {frames}x{size}²', name,
                             precision, args.batch / t, base_t / t,
                             args.batch / i, base_i / i))
        print(f'X3D-{arch.upper()}: outputs agree, max abs diff {diff:.1e}')
    print()
    print('| model | implementation | precision | train clips/s | train vs '
          'MMAction2 | inference clips/s | inference vs MMAction2 |')
    print('| --- | --- | --- | --- | --- | --- | --- |')
    for model, name, precision, tc, tr, ic, ir in rows:
        print(f'| {model} | {name} | {precision} | {tc:.2f} | {tr:.2f}x | '
              f'{ic:.2f} | {ir:.2f}x |')
    return rows


if __name__ == '__main__':
    main()
