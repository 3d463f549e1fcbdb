"""The X3D variants: one table of every fact about XS, S, M, L and XL.

The backbone, the head widths, the converters, the complexity tool, the
benchmarks and the tests read the variants from :data:`VARIANTS`; nothing
else spells a factor, a clip length or a crop size of a named variant.

The network of a variant follows from three expansion factors (paper
Table 3; PySlowFast ``configs/Kinetics/X3D_*.yaml``: ``X3D.WIDTH_FACTOR``,
``X3D.DEPTH_FACTOR``, ``X3D.BOTTLENECK_FACTOR``) applied to PySlowFast's
unexpanded network (:data:`BASE_WIDTH`, :data:`BASE_STAGE_BLOCKS`). The clip
(frames x sampling rate), the crop and the scale jitter belong to the data
pipeline; they are here because they are part of what the paper means by
"X3D-M", and the configs are checked against them.
"""
import math
from dataclasses import dataclass
from typing import Dict, List, Tuple, Union

# PySlowFast's X3D before expansion (X3D.DIM_C1 = 12; stage widths double,
# 12/24/48/96; blocks per stage 1/2/5/3 in `X3D._construct_network`).
BASE_WIDTH = 12
BASE_STAGE_BLOCKS = (1, 2, 5, 3)
FACTOR_KEYS = ('width_factor', 'depth_factor', 'bottleneck_factor')


def round_width(width: float,
                multiplier: float,
                min_width: int = 8,
                divisor: int = 8) -> int:
    """Scale ``width`` by ``multiplier`` and round it to a multiple of 8, as
    the X3D paper code does (never below ``min_width``, never more than 10%
    under the exact product)."""
    width *= multiplier
    rounded = max(min_width, int(width + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * width:
        rounded += divisor
    return int(rounded)


def round_repeats(repeats: int, multiplier: float) -> int:
    """Scale a block count by the depth factor, rounding up."""
    return int(math.ceil(multiplier * repeats))


@dataclass(frozen=True)
class Structure:
    """Widths and depths of one X3D network."""
    stem_width: int
    stage_widths: Tuple[int, ...]
    inner_widths: Tuple[int, ...]
    stage_blocks: Tuple[int, ...]

    @property
    def head_in_channels(self) -> int:
        """Input width of :class:`~x3d_plugin.models.heads.X3DHead`."""
        return self.stage_widths[-1]

    @property
    def head_mid_channels(self) -> int:
        """Width of the head's ``conv5`` (PySlowFast's ``conv_5``)."""
        return self.inner_widths[-1]


def x3d_structure(factors: Dict[str, float]) -> Structure:
    """The network that the expansion ``factors`` describe."""
    stage_widths = tuple(
        round_width(BASE_WIDTH * 2**i, factors['width_factor'])
        for i in range(len(BASE_STAGE_BLOCKS)))
    return Structure(
        stem_width=round_width(BASE_WIDTH, factors['width_factor']),
        stage_widths=stage_widths,
        inner_widths=tuple(
            int(factors['bottleneck_factor'] * w) for w in stage_widths),
        stage_blocks=tuple(
            round_repeats(n, factors['depth_factor'])
            for n in BASE_STAGE_BLOCKS))


@dataclass(frozen=True)
class Variant:
    """One published X3D network and the clip it is trained on.

    Attributes:
        name: ``'xs'``, ``'s'``, ``'m'``, ``'l'`` or ``'xl'``.
        width_factor, depth_factor, bottleneck_factor: expansion factors.
        num_frames: frames per clip (``DATA.NUM_FRAMES``).
        sampling_rate: source frames between sampled ones
            (``DATA.SAMPLING_RATE``).
        train_crop: training crop (``DATA.TRAIN_CROP_SIZE``).
        train_jitter: range of the training short side
            (``DATA.TRAIN_JITTER_SCALES``).
        test_size: testing short side = the size of the 3 test crops
            (``DATA.TEST_CROP_SIZE``).
        paper_params_m: parameters in millions (paper Table 3/4).
        paper_gflops: GFLOPs of one view at the training crop (paper
            Table 4).
    """
    name: str
    width_factor: float
    depth_factor: float
    bottleneck_factor: float
    num_frames: int
    sampling_rate: int
    train_crop: int
    train_jitter: Tuple[int, int]
    test_size: int
    paper_params_m: float
    paper_gflops: float

    @property
    def factors(self) -> Dict[str, float]:
        return {k: getattr(self, k) for k in FACTOR_KEYS}

    @property
    def structure(self) -> Structure:
        return x3d_structure(self.factors)

    @property
    def train_input(self) -> Tuple[int, int, int]:
        """One training clip, ``(frames, height, width)``."""
        return (self.num_frames, self.train_crop, self.train_crop)


# Factors: paper Table 3 / PySlowFast X3D_*.yaml (XL has no PySlowFast
# config; its factors are the paper's). Clips, crops and jitter:
# PySlowFast X3D_*.yaml (XL: L's, extrapolated). Params and GFLOPs: paper
# Table 4 (one view, training crop).
VARIANTS: Dict[str, Variant] = {
    v.name: v
    for v in (
        Variant('xs', 2.0, 2.2, 2.25, 4, 12, 160, (182, 228), 182, 3.79,
                0.60),
        Variant('s', 2.0, 2.2, 2.25, 13, 6, 160, (182, 228), 182, 3.79,
                1.96),
        Variant('m', 2.0, 2.2, 2.25, 16, 5, 224, (256, 320), 256, 3.79,
                4.73),
        Variant('l', 2.0, 5.0, 2.25, 16, 5, 312, (356, 446), 356, 6.15,
                18.37),
        Variant('xl', 2.9, 5.0, 2.25, 16, 5, 312, (356, 446), 356, 11.1,
                35.84),
    )
}


class UnknownArchError(ValueError):
    """An ``arch`` that names no variant or is not a valid factor dict."""


def get_variant(name: str) -> Variant:
    """The variant called ``name`` (case-insensitive)."""
    try:
        return VARIANTS[name.lower()]
    except KeyError:
        raise UnknownArchError(
            f'unknown X3D arch {name!r}; choose one of {list(VARIANTS)} or '
            'pass a dict with width_factor, depth_factor and '
            'bottleneck_factor') from None


def resolve_factors(arch: Union[str, Dict]) -> Dict[str, float]:
    """Expansion factors of ``arch`` (a variant name or a factor dict)."""
    if isinstance(arch, str):
        return get_variant(arch).factors
    if not isinstance(arch, dict):
        raise TypeError(f'arch must be a str or dict, got {type(arch)}')
    if set(arch) != set(FACTOR_KEYS):
        raise UnknownArchError(f'arch dict needs exactly the keys '
                               f'{sorted(FACTOR_KEYS)}, got {sorted(arch)}')
    for key, value in arch.items():
        if not isinstance(value, (int, float)) or value <= 0:
            raise UnknownArchError(
                f'arch[{key!r}] must be a positive number, got {value!r}')
    return {k: float(arch[k]) for k in FACTOR_KEYS}


def variants_with_structure(structure: Structure) -> List[str]:
    """Names of the variants whose network has ``structure``, in table
    order (XS, S and M share one network and differ in the clip)."""
    return [n for n, v in VARIANTS.items() if v.structure == structure]


def variant_of_structure(structure: Structure) -> str:
    """The name by which a network of ``structure`` is known: the last of
    the variants that share it (``'m'`` for the XS/S/M network).

    Raises:
        UnknownArchError: when no variant has ``structure``.
    """
    found = variants_with_structure(structure)
    if not found:
        raise UnknownArchError(
            f'no X3D variant has stage widths {structure.stage_widths}, '
            f'inner widths {structure.inner_widths} and blocks '
            f'{structure.stage_blocks}')
    return found[-1]


def x3d_layer_shapes(arch: str, batch: int, frames: int, crop: int) -> list:
    """``(batch, channels, (T, H, W) input, kernel, stride, padding)`` of
    every distinct channelwise convolution of X3D-``arch`` on ``frames`` x
    ``crop``² clips: the stem's 5x1x1 at half the crop, then per stage the
    first block's stride-2 3x3x3 and the others' stride 1 (the shapes the
    forward choice and ``tools/benchmark/op_speed.py`` are measured at).

    Args:
        arch (str): Variant name (``'xs'``, ``'m'``, ...).
        batch (int): Clips per batch.
        frames (int): Frames per clip.
        crop (int): Crop size of the clip.
    """
    structure = VARIANTS[arch].structure
    k3, s1, s2, p1 = (3, 3, 3), (1, 1, 1), (1, 2, 2), (1, 1, 1)
    size = (crop + 1) // 2
    rows = [(batch, structure.stem_width, (frames, size, size), (5, 1, 1),
             s1, (2, 0, 0))]
    for inner in structure.inner_widths:
        rows.append((batch, inner, (frames, size, size), k3, s2, p1))
        size = (size + 1) // 2
        rows.append((batch, inner, (frames, size, size), k3, s1, p1))
    return rows
