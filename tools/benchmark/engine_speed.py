"""Inference speed of X3D on the CPU engines, side by side in one process:
PyTorch eager (the recognizer as ``init_recognizer`` builds it, and with
BN folded), ``torch.compile``, ONNX Runtime and OpenVINO, in float32, bf16
where the engine and the CPU offer it, and int8 (NNCF for OpenVINO, ONNX
Runtime's static quantization).

Random weights (every BN statistic random too); int8 is calibrated on
``--calibrate`` random clips, so its speed is measured here and its accuracy
is not (measure it with ``tools/test.py --engine`` on a trained model).
Every configuration is timed once per round, in turn (runs alternated), after
warm-up; the table shows the median over rounds in ms per batch, the speed-up
over PyTorch eager and the largest logit difference to a float64 PyTorch
reference relative to the largest logit. ``auto`` marks the engine that
``--engine auto`` picks (the fastest installed float32 engine).

Example (the table in the deployment docs)::

    python tools/benchmark/engine_speed.py --archs xs s m --batches 1 8
"""
import argparse
import copy
import os
import statistics
import tempfile
import time

import numpy as np
import torch

from x3d_plugin.apis.benchmark import Net
from x3d_plugin.apis.engines import (OnnxRuntimeEngine, OpenVINOEngine,
                                     installed_engines)
from x3d_plugin.apis.export import (deployable_network, export_int8,
                                    relative_error, write_onnx,
                                    write_openvino)
from x3d_plugin.models import VARIANTS, build_x3d_recognizer, fuse_conv_bn
from x3d_plugin.utils.benchmark import describe_machine
from x3d_plugin.utils.cpu import cpu_info
from x3d_plugin.utils.malloc import keep_freed_memory


def random_recognizer(arch, seed=0):
    """An X3D recognizer of ``arch`` (400 classes) with every parameter and
    BN statistic random, in eval mode."""
    gen = torch.Generator().manual_seed(seed)
    model = build_x3d_recognizer(arch, 400)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.weight.copy_(torch.rand(m.weight.shape, generator=gen)
                               + 0.5)
                m.running_mean.copy_(
                    torch.randn(m.running_mean.shape, generator=gen) * 0.1)
                m.running_var.copy_(
                    torch.rand(m.running_var.shape, generator=gen) + 0.5)
    return model.eval()


def has_bf16() -> bool:
    flags = cpu_info()[1]
    return 'avx512_bf16' in flags or 'amx_bf16' in flags


def torch_runner(module, bf16=False):
    def run(x):
        with torch.no_grad(), torch.autocast('cpu', dtype=torch.bfloat16,
                                             enabled=bf16):
            return module(torch.from_numpy(x)).float().numpy()
    return run


def build_runners(arch, batch, args, tmp_dir):
    """name -> (engine, precision, callable(x) -> logits)."""
    recognizer = random_recognizer(arch)
    frames, crop = VARIANTS[arch].num_frames, VARIANTS[arch].train_crop
    example = torch.randn(1, 3, frames, crop, crop)
    net = deployable_network(recognizer)
    runners = {}
    eager = Net(recognizer.backbone, recognizer.cls_head).eval()
    runners['PyTorch eager'] = ('pytorch', 'f32', torch_runner(eager))
    folded = fuse_conv_bn(copy.deepcopy(eager))
    runners['PyTorch eager, BN folded'] = ('pytorch', 'f32',
                                           torch_runner(folded))
    if args.compile:
        # Static shapes, compiled afresh for every model and batch: the
        # models share their forward's code, and after a few recompiles
        # dynamo would switch to dynamic shapes, which inductor 2.13 fails
        # to lower for these convolutions ("Invalid ranges [0:-1]").
        torch._dynamo.reset()
        compiled = torch.compile(copy.deepcopy(folded), dynamic=False)
        runners['torch.compile, BN folded'] = ('pytorch', 'f32',
                                               torch_runner(compiled))
    if has_bf16():
        runners['PyTorch eager, bf16 autocast'] = ('pytorch', 'bf16',
                                                   torch_runner(eager, True))
    installed = installed_engines()
    threads = torch.get_num_threads()
    calibration = [np.random.default_rng(i).standard_normal(
        example.shape).astype(np.float32) for i in range(args.calibrate)]
    if 'onnxruntime' in installed:
        path = os.path.join(tmp_dir, f'{arch}.onnx')
        write_onnx(net, example, path)
        runners['ONNX Runtime'] = ('onnxruntime', 'f32',
                                   OnnxRuntimeEngine(path, 'f32', threads))
        if args.int8:
            q = os.path.join(tmp_dir, f'{arch}_int8.onnx')
            export_int8(net, example, q, 'onnx', calibration)
            runners['ONNX Runtime int8'] = ('onnxruntime', 'int8',
                                            OnnxRuntimeEngine(q, 'f32',
                                                              threads))
    if 'openvino' in installed:
        path = os.path.join(tmp_dir, f'{arch}.xml')
        write_openvino(net, example, path)
        runners['OpenVINO f32'] = ('openvino', 'f32',
                                   OpenVINOEngine(path, 'f32', threads))
        if has_bf16():
            runners['OpenVINO bf16'] = ('openvino', 'bf16',
                                        OpenVINOEngine(path, 'bf16',
                                                       threads))
        if args.int8 and any(v.startswith('nncf ')
                             for v in package_versions()):
            q = os.path.join(tmp_dir, f'{arch}_int8.xml')
            export_int8(net, example, q, 'openvino', calibration)
            runners['OpenVINO int8'] = ('openvino', 'int8',
                                        OpenVINOEngine(q, 'f32', threads))
    with torch.no_grad():
        reference = net.double()
    return runners, reference, (batch, 3, frames, crop, crop)


def package_versions():
    """'name version' of the engine packages that are installed."""
    import importlib.metadata as md
    found = []
    for name in ('onnxruntime', 'openvino', 'nncf'):
        try:
            found.append(f'{name} {md.version(name)}')
        except md.PackageNotFoundError:
            pass
    return found


def auto_engine():
    installed = installed_engines()
    for name in ('openvino', 'onnxruntime', 'pytorch'):
        if name in installed:
            return name


def measure(arch, batch, args):
    with tempfile.TemporaryDirectory() as tmp_dir:
        runners, reference, shape = build_runners(arch, batch, args,
                                                  tmp_dir)
        x = np.random.default_rng(1).standard_normal(shape).astype(
            np.float32)
        with torch.no_grad():
            expected = reference(torch.from_numpy(x).double()).numpy()
        errors = {}
        for name, (_, _, run) in runners.items():
            for _ in range(args.warmup):
                out = run(x)
            errors[name] = relative_error(out, expected)
        times = {name: [] for name in runners}
        for _ in range(args.rounds):
            for name, (_, _, run) in runners.items():
                start = time.perf_counter()
                run(x)
                times[name].append(time.perf_counter() - start)
    rows = []
    base = statistics.median(times['PyTorch eager'])
    auto = auto_engine()
    for name, (engine, precision, _) in runners.items():
        t = statistics.median(times[name])
        mark = ' (auto)' if (engine == auto and precision == 'f32' and
                             name != 'PyTorch eager, BN folded'
                             and 'compile' not in name) else ''
        rows.append((f'X3D-{arch.upper()}', batch, name + mark, precision,
                     1000 * t, base / t, errors[name]))
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--archs', nargs='+', default=['xs', 's', 'm'],
                        choices=['xs', 's', 'm', 'l', 'xl'])
    parser.add_argument('--batches', nargs='+', type=int, default=[1, 8])
    parser.add_argument('--rounds', type=int, default=10)
    parser.add_argument('--warmup', type=int, default=3)
    parser.add_argument('--threads', type=int,
                        help='threads of every engine (default: torch\'s)')
    parser.add_argument('--calibrate', type=int, default=16,
                        help='random clips that calibrate int8')
    parser.add_argument('--no-compile', dest='compile', action='store_false')
    parser.add_argument('--no-int8', dest='int8', action='store_false')
    args = parser.parse_args(argv)
    keep_freed_memory()
    if args.threads:
        torch.set_num_threads(args.threads)
    versions = ', '.join(package_versions())
    load = os.getloadavg()
    print(f'{describe_machine()}; {versions}')
    print(f'load average at start: {load[0]:.2f} {load[1]:.2f} '
          f'{load[2]:.2f}; {args.rounds} rounds after {args.warmup} '
          'warm-up, median')
    print()
    print('| model | batch | engine | precision | ms / batch | x eager | '
          'logit error |')
    print('| --- | --- | --- | --- | --- | --- | --- |')
    rows = []
    for arch in args.archs:
        for batch in args.batches:
            new = measure(arch, batch, args)
            rows += new
            for row in new:
                model, b, name, precision, ms, speedup, err = row
                print(f'| {model} | {b} | {name} | {precision} | {ms:.1f} | '
                      f'{speedup:.2f} | {err:.1e} |', flush=True)
    load = os.getloadavg()
    print()
    print(f'load average at end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}')
    return rows


if __name__ == '__main__':
    main()
