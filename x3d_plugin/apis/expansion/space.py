"""What the X3D expansion search moves through: a network with its input
(the paper's X), the six expansion axes, and the contraction of one step.

X3D paper (Feichtenhofer, CVPR 2020), section 3.1 "Expansion operations":

- X-Fast: a higher frame rate (1/gamma_tau) at the same clip duration;
- X-Temporal: a longer clip (gamma_t) at the same frame rate;
- X-Spatial: a higher input resolution (gamma_s);
- X-Depth: more blocks per residual stage (gamma_d);
- X-Width: all channels wider (gamma_w);
- X-Bottleneck: a wider inner (channelwise) layer of each block (gamma_b).

Section 3.2 ("Forward expansion") expands one axis per step, each candidate
roughly doubling the complexity. The one-step multipliers here are the ones
the published networks are made of: frames x2 (both temporal axes),
resolution x sqrt(2) (112 -> 160 -> 224 in Table 4), blocks x2.2, widths
x2, inner widths x2.25 (X3D-M's factors, Table 3, are one step of each of
the last three from X2D). Each about doubles C(X), except X-Width: twice
the widths quadruple the 1x1 convolutions, about 3.6x C(X) at X3D-XS.
"Backward contraction" shrinks the last step's multiplier to meet a target
that falls between two steps.

The start is X2D (section 3.1, "Basis instance"): one frame at 112², every
factor 1.
"""
import math
from dataclasses import asdict, dataclass, replace
from typing import Dict, List, Optional, Tuple

from ...models.variants import FACTOR_KEYS, Structure, x3d_structure

AXES = ('fast', 'temporal', 'spatial', 'depth', 'width', 'bottleneck')
# One forward step of each axis (module docstring).
FRAMES_STEP = 2
SPATIAL_STEP = math.sqrt(2)
DEPTH_STEP = 2.2
WIDTH_STEP = 2.0
BOTTLENECK_STEP = 2.25
# Crops are multiples of this; 112 * sqrt(2) = 158.4 -> 160, 160 * sqrt(2)
# = 226.3 -> 224, as in the paper's X3D-S and X3D-M.
CROP_DIVISOR = 8
# X2D's input (paper section 3.1).
X2D_FRAMES = 1
X2D_CROP = 112


@dataclass(frozen=True)
class Point:
    """One candidate network and the clip it sees: the paper's X.

    Attributes:
        num_frames: frames per clip (gamma_t).
        sampling_rate: source frames between two sampled ones (gamma_tau);
            a clip spans ``num_frames * sampling_rate`` source frames.
        crop_size: training crop (gamma_s).
        width_factor, depth_factor, bottleneck_factor: the backbone's
            expansion factors (gamma_w, gamma_d, gamma_b).
    """
    num_frames: int
    sampling_rate: int
    crop_size: int
    width_factor: float = 1.0
    depth_factor: float = 1.0
    bottleneck_factor: float = 1.0

    def __post_init__(self):
        for key in ('num_frames', 'sampling_rate', 'crop_size'):
            value = getattr(self, key)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f'{key} must be a positive integer, got '
                                 f'{value!r}')
        for key in FACTOR_KEYS:
            value = getattr(self, key)
            if not isinstance(value, (int, float)) or value <= 0:
                raise ValueError(f'{key} must be positive, got {value!r}')

    @property
    def factors(self) -> Dict[str, float]:
        """The backbone's ``arch`` dict."""
        return {k: float(getattr(self, k)) for k in FACTOR_KEYS}

    @property
    def structure(self) -> Structure:
        return x3d_structure(self.factors)

    @property
    def clip_span(self) -> int:
        """Source frames one clip covers."""
        return self.num_frames * self.sampling_rate

    @property
    def input_shape(self) -> Tuple[int, int, int]:
        """One training clip, ``(frames, height, width)``."""
        return (self.num_frames, self.crop_size, self.crop_size)

    def describe(self) -> str:
        """E.g. ``4x12 160² w2 d2.2 b2.25``."""
        return (f'{self.num_frames}x{self.sampling_rate} {self.crop_size}² '
                f'w{self.width_factor:g} d{self.depth_factor:g} '
                f'b{self.bottleneck_factor:g}')

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> 'Point':
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f'unknown keys {sorted(unknown)} in a search '
                             f'point; known: {list(cls.__dataclass_fields__)}')
        return cls(**data)


def _half_up(value: float) -> int:
    """Nearest integer >= 1, halves rounded up."""
    return max(1, math.floor(value + 0.5))


def x2d(sampling_rate: int) -> Point:
    """The paper's X2D with a single frame whose span is
    ``sampling_rate`` source frames (the span the temporal axes start from;
    the paper leaves it implicit)."""
    return Point(X2D_FRAMES, sampling_rate, X2D_CROP)


def round_crop(size: float, divisor: int = CROP_DIVISOR) -> int:
    """Nearest multiple of ``divisor`` (at least ``divisor``)."""
    return max(divisor, int(round(size / divisor)) * divisor)


@dataclass(frozen=True)
class Limits:
    """What the data allows.

    Attributes:
        max_clip_span: source frames of the shortest video; no clip may
            span more.
        max_crop: largest crop worth making (None: no limit).
    """
    max_clip_span: Optional[int] = None
    max_crop: Optional[int] = None


def expand(point: Point, axis: str) -> Point:
    """``point`` with ``axis`` expanded by one forward step."""
    if axis == 'fast':
        # Twice the frames over the same span: half the sampling interval.
        return replace(point, num_frames=point.num_frames * FRAMES_STEP,
                       sampling_rate=_half_up(point.sampling_rate /
                                              FRAMES_STEP))
    if axis == 'temporal':
        return replace(point, num_frames=point.num_frames * FRAMES_STEP)
    if axis == 'spatial':
        return replace(point, crop_size=max(
            point.crop_size + CROP_DIVISOR,
            round_crop(point.crop_size * SPATIAL_STEP)))
    if axis == 'depth':
        return replace(point, depth_factor=point.depth_factor * DEPTH_STEP)
    if axis == 'width':
        return replace(point, width_factor=point.width_factor * WIDTH_STEP)
    if axis == 'bottleneck':
        return replace(point, bottleneck_factor=point.bottleneck_factor *
                       BOTTLENECK_STEP)
    raise ValueError(f'unknown expansion axis {axis!r}; axes: {AXES}')


def why_not(point: Point, axis: str, limits: Limits) -> Optional[str]:
    """Why ``axis`` cannot grow from ``point`` (None when it can)."""
    if axis not in AXES:
        raise ValueError(f'unknown expansion axis {axis!r}; axes: {AXES}')
    if axis == 'fast' and point.sampling_rate == 1:
        return 'the clip already takes every frame (sampling rate 1)'
    grown = expand(point, axis)
    if (axis in ('fast', 'temporal') and limits.max_clip_span is not None
            and grown.clip_span > limits.max_clip_span):
        return (f'{grown.num_frames}x{grown.sampling_rate} spans '
                f'{grown.clip_span} frames, the shortest video has '
                f'{limits.max_clip_span}')
    if (axis == 'spatial' and limits.max_crop is not None
            and grown.crop_size > limits.max_crop):
        return (f'crop {grown.crop_size} is larger than max_crop '
                f'{limits.max_crop}')
    return None


def _fine_grid(low: float, high: float, steps: int = 200) -> List[float]:
    """Multipliers strictly between ``low`` and ``high``, geometric."""
    return [low * (high / low)**(i / steps) for i in range(1, steps)]


def contractions(previous: Point, axis: str) -> List[Point]:
    """Every distinct point between ``previous`` and its one-step expansion
    along ``axis`` (both excluded), from small to large: the choices of
    the paper's backward contraction. Frames stay integers (X-Fast keeps the
    span as close as an integer sampling rate allows), crops multiples of
    :data:`CROP_DIVISOR`, and widths, blocks and inner widths as the
    backbone rounds them (points of equal network are given once)."""
    grown = expand(previous, axis)
    points: List[Point] = []
    if axis in ('fast', 'temporal'):
        for frames in range(previous.num_frames + 1, grown.num_frames):
            if axis == 'fast':
                rate = _half_up(previous.clip_span / frames)
            else:
                rate = previous.sampling_rate
            points.append(replace(previous, num_frames=frames,
                                  sampling_rate=rate))
    elif axis == 'spatial':
        for crop in range(previous.crop_size + CROP_DIVISOR,
                          grown.crop_size, CROP_DIVISOR):
            points.append(replace(previous, crop_size=crop))
    else:
        key = f'{axis}_factor'
        low, high = getattr(previous, key), getattr(grown, key)
        seen = {previous.structure, grown.structure}
        for value in _fine_grid(low, high):
            point = replace(previous, **{key: round(value, 4)})
            if point.structure not in seen:
                seen.add(point.structure)
                points.append(point)
    return points
