"""The levels (grey values or colours) masks are written in, found from what their regions hold.

Lossy masks (JPEG) keep the inside of a region and smear only its edges; so a level is a value that *flat*
pixels hold (pixels whose 3 x 3 neighbourhood spans a few units), concentrated around it as noise around one
value is, never a value that only edge blends take. Structures with no flat inside (lines 1-2 px wide, specks of
a few pixels) are found from *ridge* pixels: flat along one direction, with both sides across it differing the
same way, which an edge (darker on one side, lighter on the other) never is.

Measured on JPEG masks (quality 70-98, 64 px): a region's flat pixels sit within 4 grey levels (10 RGB units) of
its value, 95-100% of them; axis-aligned grey lines keep their value to within 3; colour lines 1 px wide lose half
their chroma to JPEG's colour subsampling ((255, 0, 0) reads (143, 44, 47)), 2 px wide about a fifth
((209, 20, 18)). A value on no flat or ridge pixel, or one that two levels' blend explains, is no level.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from segtune.data.labels import RawValue

FLAT_RANGE = {1: 6, 3: 18}  # a pixel is flat when its 3 x 3 neighbourhood spans at most this (per channel)
RIDGE_STEP = {1: 20, 3: 40}  # across a ridge both sides differ from it by more than this (per channel, largest)
RADIUS = {1: 4, 3: 10}  # flat values within this of a level (per channel) are that level and its noise
CONCENTRATION = 0.75  # of the values within 3 x RADIUS of a level, at least this share lies within RADIUS
MIN_PIXELS = 3  # a level holds at least this many flat pixels ...
MIN_THIN_PIXELS = 2  # ... or ridge pixels (a speck 3 px wide keeps one or two)
MIN_SHARE = 5e-5  # ... and at least this share of all pixels (a class of 0.1% keeps ten times as many)
SNAP = 8  # a level's channel within this of 0 or 255 is written as 0 or 255
COLOUR_BIN = 8  # colours are counted in bins of 8 x 8 x 8 units to find where flat pixels gather


def _pad(arr: np.ndarray, n: int) -> np.ndarray:
    widths = ((n, n), (n, n)) + (((0, 0),) if arr.ndim == 3 else ())
    return np.pad(arr, widths, mode="edge")


def _shift(padded: np.ndarray, n: int, dy: int, dx: int, h: int, w: int) -> np.ndarray:
    """The neighbour at (dy, dx) of every pixel, from an array padded by n."""
    return padded[n + dy : n + dy + h, n + dx : n + dx + w]


def flat_and_ridge(arr: np.ndarray, ridges: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Boolean maps of a picture's flat pixels and ridge pixels (see the module's docstring; none unless
    ``ridges``); (H, W) grey values or (H, W, 3) colours."""
    h, w = arr.shape[:2]
    channels = 1 if arr.ndim == 2 else 3
    a = arr.astype(np.int16)
    p = _pad(a, 2)
    near = [_shift(p, 2, dy, dx, h, w) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]
    spread = np.max(near, axis=0) - np.min(near, axis=0)
    flat = (spread if channels == 1 else spread.max(axis=2)) <= FLAT_RANGE[channels]
    ridge = np.zeros((h, w), bool)
    if not ridges:
        return flat, ridge
    step, same = RIDGE_STEP[channels], FLAT_RANGE[channels]

    def gap(b: np.ndarray) -> np.ndarray:
        d = np.abs(b - a)
        return d if channels == 1 else d.max(axis=2)

    for (ay, ax), (cy, cx) in (((0, 1), (1, 0)), ((1, 0), (0, 1)), ((1, 1), (1, -1)), ((1, -1), (1, 1))):
        along = (gap(_shift(p, 2, ay, ax, h, w)) <= same) & (gap(_shift(p, 2, -ay, -ax, h, w)) <= same)
        sides = []
        for sign in (1, -1):
            one, two = _shift(p, 2, sign * cy, sign * cx, h, w), _shift(p, 2, 2 * sign * cy, 2 * sign * cx, h, w)
            first = gap(one) > step
            diff = np.where(first[..., None] if channels == 3 else first, one - a, two - a)
            sides.append((first | (gap(two) > step), diff))
        (has_a, da), (has_b, db) = sides
        if channels == 3:  # both sides darker (or lighter) in every channel that changes: a line, never an edge
            product = da.astype(np.int32) * db
            agree = (product > 0).any(axis=2) & ~(product < -(same**2)).any(axis=2)
        else:
            agree = (da.astype(np.int32) * db) > 0
        ridge |= along & has_a & has_b & agree
    return flat, ridge & ~flat


def _codes(values: np.ndarray) -> np.ndarray:
    """(N,) grey values, or (N, 3) colours packed as one integer each."""
    if values.ndim == 1:
        return values.astype(np.int64)
    v = values.astype(np.int64)
    return (v[:, 0] << 16) | (v[:, 1] << 8) | v[:, 2]


def _unpack(code: int, channels: int) -> RawValue:
    if channels == 1:
        return int(code)
    return (int(code >> 16) & 255, int(code >> 8) & 255, int(code) & 255)


@dataclass
class Evidence:
    """What a set of masks' regions hold: how many flat and ridge pixels take each value (packed codes), and how
    many pixels were looked at. Built one picture at a time (:meth:`add`)."""

    channels: int = 0
    pixels: int = 0
    flat: dict[int, int] = field(default_factory=dict)
    ridge: dict[int, int] = field(default_factory=dict)
    core: dict[int, int] = field(default_factory=dict)  # flat pixels whose 8 neighbours are flat too

    def add(self, arr: np.ndarray) -> None:
        channels = 1 if arr.ndim == 2 else 3
        if self.channels and channels != self.channels:  # a grey mask among colour ones: read as colour
            arr = np.repeat(arr[..., None], 3, axis=2) if channels == 1 else arr[..., 0]
            channels = self.channels
        self.channels = channels
        flat, ridge = flat_and_ridge(arr)
        # read only for colour masks (read_levels' chroma smears): grey ones skip the erosion and its census
        core = ndimage.binary_erosion(flat, np.ones((3, 3), bool), border_value=1) if channels == 3 else None
        self.pixels += flat.size
        for where, into in ((flat, self.flat), (ridge, self.ridge), (core, self.core)):
            if where is None:
                continue
            codes, counts = np.unique(_codes(arr[where]), return_counts=True)
            for c, n in zip(codes.tolist(), counts.tolist(), strict=True):
                into[c] = into.get(c, 0) + n

    def merge(self, others: Iterable[Evidence]) -> Evidence:
        for o in others:
            if not o.pixels:
                continue
            self.channels = self.channels or o.channels
            self.pixels += o.pixels
            for src, dst in ((o.flat, self.flat), (o.ridge, self.ridge), (o.core, self.core)):
                for c, n in src.items():
                    dst[c] = dst.get(c, 0) + n
        return self


@dataclass(frozen=True)
class Level:
    value: RawValue
    pixels: int  # flat (or ridge) pixels that hold it
    concentration: float
    thin: bool = False  # found on ridges only: lines 1-2 px wide, specks


def _grid(counts: dict[int, int], channels: int) -> tuple[np.ndarray, int]:
    """A histogram of the values: 256 bins (grey), or a cube of COLOUR_BIN-unit bins (colour)."""
    if channels == 1:
        hist = np.zeros(256, np.int64)
        for c, n in counts.items():
            hist[c] += n
        return hist, 1
    side = 256 // COLOUR_BIN
    hist = np.zeros((side, side, side), np.int64)
    if counts:
        codes = np.fromiter(counts, np.int64, len(counts))
        n = np.fromiter(counts.values(), np.int64, len(counts))
        np.add.at(
            hist, ((codes >> 16 & 255) // COLOUR_BIN, (codes >> 8 & 255) // COLOUR_BIN, (codes & 255) // COLOUR_BIN), n
        )
    return hist, COLOUR_BIN


def _window_sums(hist: np.ndarray, r: int) -> np.ndarray:
    """Sum over the window of radius r (in bins) around every bin, same shape as hist."""
    out = hist.astype(np.int64)
    for axis in range(hist.ndim):
        c = np.cumsum(np.pad(out, [(r + 1, r) if a == axis else (0, 0) for a in range(hist.ndim)]), axis=axis)
        n = hist.shape[axis]
        out = np.take(c, range(2 * r + 1, 2 * r + 1 + n), axis=axis) - np.take(c, range(0, n), axis=axis)
    return out


def _counted(counts: dict[int, int], channels: int) -> tuple[np.ndarray, np.ndarray]:
    """Counted packed codes as (N, C) values and their (N,) counts."""
    codes = np.fromiter(counts, np.int64, len(counts))
    n = np.fromiter(counts.values(), np.int64, len(counts))
    if channels == 1:
        return codes[:, None], n
    return np.stack([codes >> 16 & 255, codes >> 8 & 255, codes & 255], axis=1), n


def _exact_centre(counts: dict[int, int], channels: int, near: RawValue, radius: float) -> RawValue:
    """The value the exact values within ``radius`` (per channel) of ``near`` are noise around: a grey level's most
    common value (JPEG's noise is symmetric: it keeps the value written most often), a colour's mean; channels
    near 0 or 255 written as 0 or 255."""
    vals, counted = _counted(counts, channels)
    vals, n = vals.astype(np.float64), counted.astype(np.float64)
    centre = np.array([near] if channels == 1 else near, np.float64)
    inside = np.abs(vals - centre).max(axis=1) <= radius
    mean = (vals[inside] * n[inside, None]).sum(axis=0) / max(1.0, n[inside].sum()) if inside.any() else centre
    if channels == 1 and inside.any():
        mode = int(np.flatnonzero(inside)[n[inside].argmax()])
        mean = vals[mode]
    snapped = [0 if x <= SNAP else 255 if x >= 255 - SNAP else int(round(x)) for x in np.atleast_1d(mean)]
    return snapped[0] if channels == 1 else (snapped[0], snapped[1], snapped[2])


def peaks(counts: dict[int, int], channels: int, min_pixels: int, limit: int = 64) -> list[Level]:
    """Values the counted pixels gather around: the densest first, each a level when at least ``min_pixels`` lie
    within RADIUS of it and CONCENTRATION of those within 3 x RADIUS lie within RADIUS (noise around one value,
    not a gradient's spread); nothing within 3 x RADIUS of a level is taken again."""
    if not counts:
        return []
    hist, unit = _grid(counts, channels)
    r = max(1, round(RADIUS[channels] / unit))
    inner, outer = _window_sums(hist, r), _window_sums(hist, 3 * r)
    alive = np.ones(hist.shape, bool)
    found: list[Level] = []
    while len(found) < limit:
        masked = np.where(alive, inner, -1)
        at = np.unravel_index(int(masked.argmax()), hist.shape)
        if masked[at] < min_pixels:
            break
        box = tuple(slice(max(0, i - 3 * r), i + 3 * r + 1) for i in at)
        alive[box] = False
        concentration = float(inner[at] / max(1, outer[at]))
        if concentration < CONCENTRATION:
            continue
        near = int(at[0]) if channels == 1 else tuple(int(i) * unit + unit // 2 for i in at)
        value = _exact_centre(counts, channels, near, RADIUS[channels] + unit)
        found.append(Level(value, int(inner[at]), concentration))
    return found


def distance(a: RawValue, b: RawValue) -> float:
    """Between two levels, the largest difference of a channel."""
    if isinstance(a, int) and isinstance(b, int):
        return float(abs(a - b))
    return float(max(abs(x - y) for x, y in zip(a, b, strict=True)))  # type: ignore[arg-type]


def _ycc(c: RawValue) -> np.ndarray:
    """Luma and chroma (JPEG's YCbCr) of a colour; a grey value's luma alone."""
    if isinstance(c, int):
        return np.array([c, 128.0, 128.0])
    r, g, b = (float(x) for x in c)
    return np.array(
        [
            0.299 * r + 0.587 * g + 0.114 * b,
            128 - 0.1687 * r - 0.3313 * g + 0.5 * b,
            128 + 0.5 * r - 0.4187 * g - 0.0813 * b,
        ]
    )


SMEAR_SLACK = 12.0  # luma / chroma units a smeared value may sit off the blend of two levels


def _along(y: np.ndarray, ya: np.ndarray, yb: np.ndarray) -> tuple[float, float]:
    """Where the chroma of ``y`` lies along the segment from a's chroma to b's (0 at a, 1 at b, not clipped), and
    how far it is from the segment's nearest point. Luma and chroma as _ycc gives them."""
    d = yb[1:] - ya[1:]
    t = float(np.dot(y[1:] - ya[1:], d) / max(1e-9, np.dot(d, d)))
    return t, float(np.linalg.norm(ya[1:] + min(max(t, 0.0), 1.0) * d - y[1:]))


def smear_of(value: RawValue, levels: list[RawValue], slack: float = 0.0) -> tuple[RawValue, RawValue] | None:
    """Two levels whose blend explains ``value`` (a thin structure of one over the other, smeared by JPEG: its
    luma and its chroma each between theirs, within ``slack`` or SMEAR_SLACK), or None."""
    slack = slack or SMEAR_SLACK
    y = _ycc(value)
    for i, a in enumerate(levels):
        for b in levels[i + 1 :]:
            ya, yb = _ycc(a), _ycc(b)
            lo, hi = np.minimum(ya[0], yb[0]) - slack, np.maximum(ya[0], yb[0]) + slack
            if not lo <= y[0] <= hi:
                continue
            if _along(y, ya, yb)[1] <= slack:
                return a, b
    return None


LUMA_KEPT = 8.0  # luma units a chroma smear sits off the luma of the level JPEG kept it from


def chroma_smear(value: RawValue, levels: list[RawValue]) -> tuple[RawValue, RawValue] | None:
    """Two colour levels whose chroma ``value`` holds a blend of while keeping one's luma, or None: what JPEG's
    colour subsampling makes of a line 1-2 px wide of one colour over another (it keeps the line's luma and
    averages the chroma over 2 x 2 pixels); the band it leaves can be 3 px wide, flat along its middle. A colour
    class at the blend of two others keeps its own luma, between theirs."""
    if not isinstance(value, tuple):
        return None
    y = _ycc(value)
    for i, a in enumerate(levels):
        for b in levels[i + 1 :]:
            if a == value or b == value:
                continue
            ya, yb = _ycc(a), _ycc(b)
            if min(abs(y[0] - ya[0]), abs(y[0] - yb[0])) > LUMA_KEPT:
                continue
            if np.linalg.norm(yb[1:] - ya[1:]) <= 2 * SMEAR_SLACK:
                continue  # the same chroma (greys): no colour to blend
            t, off = _along(y, ya, yb)
            if 0.15 <= t <= 0.85 and off <= SMEAR_SLACK:
                return a, b
    return None


def _core_pixels(evidence: Evidence, value: RawValue, radius: int) -> int:
    """How many core pixels (flat with their neighbours: inside a region at least 3 px across) hold the colour
    ``value``."""
    if not evidence.core:
        return 0
    vals, n = _counted(evidence.core, 3)
    return int(n[(np.abs(vals - np.array(value)) <= radius).all(axis=1)].sum())


@dataclass
class Reading:
    """The levels a set of masks holds, and what else the evidence would allow (a reading with one more level)."""

    levels: list[Level]
    doubtful: list[tuple[Level, tuple[RawValue, RawValue]]]  # thin values two levels' blend also explains

    @property
    def values(self) -> list[RawValue]:
        return sorted(level.value for level in self.levels)


def read_levels(evidence: Evidence, limit: int = 64) -> Reading:
    """The levels of a set of masks: values flat pixels gather around, then values ridges gather around that no
    level is near. A ridge value two levels' blend explains is *doubtful* (a thin class of its own, or a thin
    structure of one level smeared over the other): the caller refuses rather than guess."""
    channels = evidence.channels or 1
    min_pixels = max(MIN_PIXELS, round(MIN_SHARE * evidence.pixels))
    levels = peaks(evidence.flat, channels, min_pixels, limit)
    separation = 3 * RADIUS[channels]
    levels = [lv for i, lv in enumerate(levels) if all(distance(lv.value, o.value) > separation for o in levels[:i])]
    doubtful: list[tuple[Level, tuple[RawValue, RawValue]]] = []
    if channels == 3:
        # a line of one colour over another, smeared by JPEG into a band flat only along its middle: its value
        # keeps one level's luma and blends their chroma; no region of it is wide enough to hold core pixels
        for lv in sorted(levels, key=lambda lv: lv.pixels):
            others = [o.value for o in levels if o is not lv]
            pair = chroma_smear(lv.value, others)
            if pair is not None and _core_pixels(evidence, lv.value, RADIUS[3]) < MIN_PIXELS:
                levels.remove(lv)
                doubtful.append((Level(lv.value, lv.pixels, lv.concentration, thin=True), pair))
    thin_min = max(MIN_THIN_PIXELS, round(MIN_SHARE * evidence.pixels / 2))
    thin = [
        t
        for t in peaks(evidence.ridge, channels, thin_min, limit)
        if all(distance(t.value, lv.value) > separation for lv in levels)
    ]
    flat_values = [lv.value for lv in levels]
    ground = max(levels, key=lambda lv: lv.pixels).value if levels else None  # what most of the masks hold
    coloured: list[Level] = []
    # the most extreme first: a thin line's smear only moves it towards what surrounds it
    thin.sort(key=lambda t: -min((distance(t.value, v) for v in flat_values), default=255.0))
    for t in thin:
        if any(distance(t.value, lv.value) <= separation for lv in levels):
            continue
        flat_smear = smear_of(t.value, flat_values)
        thin_smear = smear_of(t.value, [lv.value for lv in levels])
        if flat_smear is not None and channels == 3 and ground not in flat_smear:
            continue  # a sliver between two colour regions: their edge's blend (a thin class lies over the ground)
        if flat_smear is not None:
            doubtful.append((Level(t.value, t.pixels, t.concentration, thin=True), flat_smear))
        elif thin_smear is not None:
            continue  # a thinner stretch of a thin level, smeared over a flat one: its pixels are edge blends
        elif channels == 3:
            coloured.append(t)
        else:
            levels.append(Level(t.value, t.pixels, t.concentration, thin=True))
    # JPEG keeps a thin colour line's luma and halves its chroma, differently over each colour it crosses: a line
    # 1 px wide and one 2 px wide of one class read as two colours, neither of them the class's own
    doubtful += [(Level(t.value, t.pixels, t.concentration, thin=True), (t.value, t.value)) for t in coloured]
    return Reading(levels, doubtful)


def _grow(mask: np.ndarray, n: int) -> np.ndarray:
    """``mask`` dilated by n pixels (a (2n+1)-square neighbourhood), separably."""
    out = mask.copy()
    for axis in (0, 1):
        grown = out.copy()
        for shift in range(1, n + 1):
            lo = [slice(None)] * 2
            hi = [slice(None)] * 2
            lo[axis], hi[axis] = slice(shift, None), slice(None, -shift)
            grown[tuple(lo)] |= out[tuple(hi)]
            grown[tuple(hi)] |= out[tuple(lo)]
        out = grown
    return out


def _ycc_array(values: np.ndarray) -> np.ndarray:
    """(N, C) values -> (N, 3) luma and chroma."""
    v = values.astype(np.float64)
    if v.shape[1] == 1:
        return np.concatenate([v, np.full((len(v), 2), 128.0)], axis=1)
    r, g, b = v[:, 0], v[:, 1], v[:, 2]
    return np.stack(
        [
            0.299 * r + 0.587 * g + 0.114 * b,
            128 - 0.1687 * r - 0.3313 * g + 0.5 * b,
            128 + 0.5 * r - 0.4187 * g - 0.0813 * b,
        ],
        axis=1,
    )


def _smears(values: np.ndarray, a: RawValue, b: RawValue) -> np.ndarray:
    """For (N, C) values: whether each is a blend of a and b (luma and chroma each between theirs)."""
    y = _ycc_array(values)
    ya, yb = _ycc(a), _ycc(b)
    lo, hi = min(ya[0], yb[0]) - SMEAR_SLACK, max(ya[0], yb[0]) + SMEAR_SLACK
    d = yb[1:] - ya[1:]
    t = np.clip(((y[:, 1:] - ya[1:]) @ d) / max(1e-9, float(d @ d)), 0, 1)
    off_segment = np.linalg.norm(ya[1:] + t[:, None] * d - y[:, 1:], axis=1)
    return (y[:, 0] >= lo) & (y[:, 0] <= hi) & (off_segment <= SMEAR_SLACK)


@dataclass
class Audit:
    """A second look at the masks once their levels are known: the pixels far from every level (ignored when
    read) that no blend of a neighbouring level with another explains (what a class too small or thin to keep
    its value through JPEG leaves), and, for each doubtful value, how many of its pixels sit where two regions
    meet (a blob's tip smeared) rather than alone."""

    pixels: int = 0
    unexplained: dict[int, int] = field(default_factory=dict)  # packed value -> pixels
    doubtful: dict[int, int] = field(default_factory=dict)  # doubtful index -> its pixels
    at_tips: dict[int, int] = field(default_factory=dict)  # doubtful index -> its pixels near both its components

    def merge(self, others: Iterable[Audit]) -> Audit:
        for o in others:
            self.pixels += o.pixels
            for src, dst in ((o.unexplained, self.unexplained), (o.doubtful, self.doubtful), (o.at_tips, self.at_tips)):
                for k, n in src.items():
                    dst[k] = dst.get(k, 0) + n
        return self

    @property
    def lost(self) -> int:
        return sum(self.unexplained.values())

    def lost_level(self, channels: int) -> Level | None:
        """Where the unexplained pixels gather as noise around one value does (a class whose regions JPEG left
        no flat inside), or None when they spread."""
        found = peaks(self.unexplained, channels, 1, limit=1)
        return found[0] if found else None

    def lost_value(self, channels: int) -> RawValue:
        """Where the unexplained pixels gather most."""
        found = peaks(self.unexplained, channels, 1, limit=1)
        if found:
            return found[0].value
        code = max(self.unexplained, key=self.unexplained.get)
        return _unpack(code, channels)


REACH = 3  # an edge's blend lies within this many pixels of both regions (JPEG's colour bleeds 2-3 px)
NOISE = {1: 10, 3: 24}  # JPEG's noise inside a region, per channel: at most this far from its level
LINE_LENGTH = 5  # an island this long (or longer) and at most 2 px wide on average is a line, not a speck


def _quarter(levels: list[RawValue]) -> float:
    gaps = [float(np.linalg.norm(np.subtract(a, b))) for i, a in enumerate(levels) for b in levels[i + 1 :]]
    return min(gaps) / 4 if gaps else 64.0


def audit(
    arr: np.ndarray,
    levels: list[RawValue],
    tolerance: float,
    doubtful: list[tuple[RawValue, tuple[RawValue, RawValue]]],
) -> Audit:
    """One mask's :class:`Audit` (the reader's snapping: Euclidean distance within ``tolerance``)."""
    h, w = arr.shape[:2]
    channels = 1 if arr.ndim == 2 else 3
    flat = arr.reshape(h * w, channels)
    lv = np.array([v if isinstance(v, tuple) else (v,) for v in levels], np.int16)
    gaps = np.abs(flat[:, None, :].astype(np.int16) - lv[None])  # (pixels, levels, channels)
    cheb = gaps.max(axis=2)
    d = cheb.astype(np.float32) if channels == 1 else np.sqrt((gaps.astype(np.float32) ** 2).sum(axis=2))
    # ringing read as the level beside it: within a quarter of the closest levels' gap (the reader may snap
    # farther: a speck of another class snapped to the level around it is off here, the evidence of a class JPEG
    # kept no level of)
    strict = min(tolerance, _quarter(levels))
    # a region: pixels within JPEG's noise of a level (a speck of another class is no part of the one around it,
    # even when the reader snaps it there)
    inside = cheb.min(axis=1) <= NOISE[channels]
    regions = [(inside & (cheb.argmin(axis=1) == i)).reshape(h, w) for i in range(len(levels))]
    out = Audit(pixels=h * w)
    islands, count = ndimage.label((~inside).reshape(h, w), structure=np.ones((3, 3)))
    label = islands.ravel()
    idx = np.flatnonzero(label)  # the pixels off every level by more than noise: the rest is plainly read
    near = np.stack([_grow(r, REACH).ravel()[idx] for r in regions])
    around = near.sum(axis=0)
    values = flat[idx].astype(np.float64)
    # where two regions meet, any blend JPEG made of them is an edge; grey keeps its blends honest: between the
    # two levels, or no edge's
    alone = around < 2
    if channels == 1:
        here = lv[:, 0][:, None].astype(np.float64)
        lo = np.where(near, here, np.inf).min(axis=0)
        hi = np.where(near, here, -np.inf).max(axis=0)
        alone |= (around >= 2) & ((values[:, 0] < lo - NOISE[1]) | (values[:, 0] > hi + NOISE[1]))
    # JPEG's ringing around a level beside it, read as that level
    alone &= ~(near & (strict >= d[idx].T)).any(axis=0)
    # an island this long and at most 2 px wide on average is a line of a known level, smeared over the one
    # around it
    boxes = ndimage.find_objects(islands)
    sizes = np.bincount(label, minlength=count + 1)
    long = np.array([0] + [max(b[0].stop - b[0].start, b[1].stop - b[1].start) for b in boxes])
    line = (long >= LINE_LENGTH) & (sizes <= 2 * long)
    pick = np.flatnonzero(alone)
    if count and len(pick):
        # the levels each island touches (within REACH): a region's colour bled into the one around it (JPEG's
        # chroma, up to a block away from the region's edge) blends two of them
        labels = label[idx[pick]]
        touch = np.zeros((len(levels), count + 1), bool)
        for k, region in enumerate(regions):
            touch[k, np.unique(islands[_grow(region, REACH) & (islands > 0)])] = True
        values = values[pick]
        explained = np.zeros(len(pick), bool)
        on_line = line[labels]
        for i, a_ in enumerate(levels):
            for k in range(i + 1, len(levels)):
                smear = _smears(values, a_, levels[k])
                explained |= touch[i, labels] & touch[k, labels] & smear
                # a line 1-2 px wide of a known level, smeared over the one it crosses
                explained |= on_line & (touch[i, labels] | touch[k, labels]) & smear
        lost = values[~explained].astype(np.int64)
        codes = lost[:, 0] if channels == 1 else (lost[:, 0] << 16) | (lost[:, 1] << 8) | lost[:, 2]
        for c, n in zip(*np.unique(codes, return_counts=True), strict=True):
            out.unexplained[int(c)] = out.unexplained.get(int(c), 0) + int(n)
    flat = flat.astype(np.float64)
    for k, (value, (a, b)) in enumerate(doubtful):
        if a not in levels or b not in levels:
            continue
        target = np.array(value if isinstance(value, tuple) else (value,), np.float64)
        mine = np.abs(flat - target).max(axis=1) <= 1.5 * RADIUS[channels]
        if mine.any():
            ia, ib = levels.index(a), levels.index(b)
            out.doubtful[k] = int(mine.sum())
            both = _grow(regions[ia], 2 * REACH).ravel() & _grow(regions[ib], 2 * REACH).ravel()
            out.at_tips[k] = int((mine & both).sum())
    return out
