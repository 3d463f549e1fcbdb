"""Write the embedded demo dataset (see x3d_plugin/datasets/demo_data.py):
eight synthetic motion classes as real H.264 videos with MMAction2 lists.

Usage: ``python tools/data/generate_demo_dataset.py data/x3d_demo``
"""
import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from x3d_plugin.datasets.demo_data import generate  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('root', nargs='?', default='data/x3d_demo',
                        help='output folder (default: data/x3d_demo)')
    parser.add_argument('--train-per-class', type=int, default=100)
    parser.add_argument('--val-per-class', type=int, default=16)
    parser.add_argument('--frames', type=int, default=16)
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--long-per-class', type=int, default=0,
                        help='also write the "long" split: this many videos '
                        'per class of --long-frames frames whose shape wraps '
                        'around the frame (default: none)')
    parser.add_argument('--long-frames', type=int, default=400)
    args = parser.parse_args()
    lists = generate(args.root, args.train_per_class, args.val_per_class,
                     args.seed, args.frames, args.long_per_class,
                     args.long_frames)
    for split, path in lists.items():
        count = sum(1 for _ in open(path))
        print(f'{split}: {count} videos, list {path}')
    print(f'label map: {os.path.join(args.root, "label_map.txt")}')


if __name__ == '__main__':
    main()
