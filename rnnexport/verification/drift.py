"""How far one array is from another: numbers only, no judging (``verify`` judges)."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import numpy as np

# Error histogram: counts of |actual - expected| in half-decade bins [0, 1e-12), [1e-12, 10^-11.5), ...,
# [10^1.5, 1e2), [1e2, inf); 30 bins in all.
HISTOGRAM_EDGES = tuple(float(10.0**e) for e in np.arange(-12.0, 2.01, 0.5))
REL_FLOOR = 1e-6  # |expected| below this counts as this, so relative error near zero stays finite
_EDGE_BITS = np.array(HISTOGRAM_EDGES).view(np.uint64)
_EDGE_OCTAVES = (_EDGE_BITS >> np.uint64(52)).view(np.int64)  # each edge's binary octave (its exponent bits)
SMALL_HISTOGRAM = 4096  # up to this many errors np.searchsorted counts them quicker (33 µs against 91 µs at 4,096)
CHUNK_STEPS = 512  # time steps compared at once
CURVE_POINTS = 256  # per-timestep curves are max-pooled to at most this many points in reports


@dataclass(frozen=True)
class OutputDrift:
    """Drift of one output: ``actual`` measured against ``expected`` (the reference).

    Statistics cover elements finite on both sides; ``nonfinite_mismatches`` counts elements where
    exactly one side is NaN/Inf (or both are, differently): ``nonfinite_introduced`` of them are NaN/Inf
    in ``actual`` only, the rest are finite in ``actual`` where ``expected`` is not (a NaN hidden).
    ``per_step`` is the max abs error at each time step (outputs with a time axis only); ``growth_slope``
    its least-squares slope per step (of the full curve, before the pooling that ``to_dict`` applies) and
    ``growth_ratio`` the mean error over the last quarter of the steps over the first quarter.
    ``shape_mismatch`` says, when the shapes differ (or the output is missing, or holds integers, booleans or
    strings where the oracle holds real numbers), what each side had, and
    ``shapes`` holds them as (actual, expected); the numbers are then zero.
    ``histogram`` counts the errors of finite elements per bin of ``HISTOGRAM_EDGES``.
    """

    max_abs: float
    mean_abs: float
    rms: float
    max_rel: float
    expected_max_abs: float
    worst_index: tuple[int, ...]
    nonfinite_mismatches: int
    nonfinite_introduced: int
    per_step: tuple[float, ...] | None = None
    growth_slope: float | None = None
    growth_ratio: float | None = None
    histogram: tuple[int, ...] = ()  # counts per bin of HISTOGRAM_EDGES (finite elements only)
    shape_mismatch: str | None = None
    shapes: tuple[tuple[int, ...], tuple[int, ...]] | None = None

    @classmethod
    def unmatched(cls, why: str, shapes: tuple[tuple[int, ...], tuple[int, ...]] | None = None) -> OutputDrift:
        """An output that cannot be compared element by element: ``why``, in words (no statistics)."""
        return cls(0.0, 0.0, 0.0, 0.0, 0.0, (), 0, 0, shape_mismatch=why, shapes=shapes)

    @classmethod
    def from_arrays(cls, expected: np.ndarray, actual: np.ndarray, time_axis: int | None = None,
                    chunk_steps: int = CHUNK_STEPS) -> OutputDrift:
        """Compare two arrays of one shape. With ``time_axis``, the statistics are gathered
        ``chunk_steps`` time steps at a time, so the memory used here does not grow with the sequence."""
        if expected.shape != actual.shape:
            return cls.unmatched(f"shape {list(actual.shape)} where PyTorch gives {list(expected.shape)}",
                                 (tuple(actual.shape), tuple(expected.shape)))
        if _kind(actual) != _kind(expected):
            return cls.unmatched(f"element type {actual.dtype} where PyTorch gives {_kind(expected)} numbers")
        acc = _Accumulator()
        if time_axis is None or expected.size == 0:
            acc.add(expected, actual, None, 0)
        else:
            for start in range(0, expected.shape[time_axis], chunk_steps):
                window = (slice(None),) * time_axis + (slice(start, start + chunk_steps),)
                acc.add(expected[window], actual[window], time_axis, start)
        per_step = np.concatenate(acc.per_step) if acc.per_step else None
        slope, ratio = _growth(per_step) if per_step is not None else (None, None)
        count = max(acc.finite, 1)
        return cls(
            max_abs=acc.max_abs, mean_abs=acc.sum_abs / count, rms=float(np.sqrt(acc.sum_sq / count)),
            max_rel=acc.max_rel, expected_max_abs=acc.expected_max_abs, worst_index=acc.worst_index,
            nonfinite_mismatches=acc.mismatches, nonfinite_introduced=acc.introduced,
            per_step=None if per_step is None else tuple(float(v) for v in per_step),
            growth_slope=slope, growth_ratio=ratio, histogram=tuple(int(c) for c in acc.histogram),
        )

    def to_dict(self) -> dict:
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["worst_index"] = list(self.worst_index)
        data["histogram"] = list(self.histogram)
        data["shapes"] = None if self.shapes is None else [list(s) for s in self.shapes]
        data["per_step"] = None if self.per_step is None else pooled_curve(self.per_step)
        return data


_WIDENED = (np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64))
_KINDS = {"f": "real", "i": "integer", "u": "integer", "b": "boolean"}


def _kind(a: np.ndarray) -> str:
    """What an array holds, in words: the precision of a real number is the tolerance's business, not this."""
    kind = _KINDS.get(a.dtype.kind)
    if kind is None and a.dtype.name.startswith(("bfloat16", "float8")):  # ml_dtypes' types, as runtimes return them
        return "real"
    return kind or str(a.dtype)


class _Accumulator:
    """Running statistics over the pieces of one output, in time order."""

    def __init__(self) -> None:
        self.max_abs = self.sum_abs = self.sum_sq = self.max_rel = self.expected_max_abs = 0.0
        self.finite = self.mismatches = self.introduced = 0
        self.worst_index: tuple[int, ...] = ()
        self.per_step: list[np.ndarray] = []
        self.histogram = np.zeros(len(HISTOGRAM_EDGES) + 1, dtype=np.int64)

    def add(self, expected: np.ndarray, actual: np.ndarray, time_axis: int | None, offset: int) -> None:
        e = expected.astype(np.float64, copy=False)
        # float16/32/64 are widened by the subtraction itself, exactly as by astype, without a copy (not longdouble:
        # its values beyond float64 become infinite only when cast)
        with np.errstate(over="ignore"):  # what float64 cannot hold is infinite there, and counted so
            a = actual if actual.dtype in _WIDENED else actual.astype(np.float64)
        err = np.asarray(np.abs(np.subtract(a, e, dtype=np.float64)))  # arrays also for 0-d outputs
        ref = np.asarray(np.abs(e))
        counted = err.size  # elements finite on both sides
        top = float(err.max(initial=0.0))
        if not math.isfinite(top):  # one side is NaN or infinite somewhere (inf - x is inf, NaN stays)
            finite = np.isfinite(e) & np.isfinite(a)
            same_nonfinite = ~finite & ((np.isnan(e) & np.isnan(a)) | (e == a))
            self.mismatches += int(np.count_nonzero(~finite & ~same_nonfinite))
            self.introduced += int(np.count_nonzero(np.isfinite(e) & ~np.isfinite(a)))
            err[~finite] = ref[~finite] = 0.0
            counted = int(np.count_nonzero(finite))
            top = float(err.max(initial=0.0))
        self.finite += counted
        if err.size and (not self.worst_index or top > self.max_abs):
            index = list(np.unravel_index(int(np.argmax(err)), err.shape))
            if time_axis is not None:
                index[time_axis] += offset
            self.worst_index = tuple(int(i) for i in index)
        self.max_abs = max(self.max_abs, top)
        self.sum_abs += float(err.sum())
        self.sum_sq += float((err**2).sum())
        self.expected_max_abs = max(self.expected_max_abs, float(ref.max(initial=0.0)))
        np.maximum(ref, REL_FLOOR, out=ref)
        self.max_rel = max(self.max_rel, float(np.divide(err, ref, out=ref).max(initial=0.0)))
        self.histogram += _histogram(err)
        self.histogram[0] -= err.size - counted  # the elements not finite on both sides, set to 0 above: in no bin
        if time_axis is not None:
            self.per_step.append(err.max(axis=tuple(i for i in range(err.ndim) if i != time_axis)))


def _histogram(err: np.ndarray) -> np.ndarray:
    """Counts of ``err`` (float64, finite, >= 0) per bin of ``HISTOGRAM_EDGES``, as
    ``np.bincount(np.searchsorted(HISTOGRAM_EDGES, err, side="right"))`` counts them, at a tenth of its time: such
    doubles order as their bit patterns do, so a bin's count follows from how many reach each edge; a binary octave
    (the exponent bits) that holds no element has its count from the octaves alone, without a pass over ``err``."""
    if err.size <= SMALL_HISTOGRAM:  # below this, a search per element is the quicker
        return np.bincount(np.searchsorted(HISTOGRAM_EDGES, err.reshape(-1), side="right"),
                           minlength=len(HISTOGRAM_EDGES) + 1)
    bits = err.reshape(-1).view(np.uint64)
    octaves = np.bincount((bits >> np.uint64(52)).view(np.int64), minlength=2049)
    from_octave = np.cumsum(octaves[::-1])[::-1]  # from_octave[k]: how many elements lie in octave k or above
    reaching = from_octave[_EDGE_OCTAVES + 1]
    for i in np.flatnonzero(octaves[_EDGE_OCTAVES]):  # the edges inside a populated octave
        reaching[i] = np.count_nonzero(bits >= _EDGE_BITS[i])
    return -np.diff(reaching, prepend=bits.size, append=0)


def _growth(per_step: np.ndarray) -> tuple[float | None, float | None]:
    steps = len(per_step)
    if steps < 4:
        return None, None
    centred = np.arange(steps, dtype=np.float64) - (steps - 1) / 2
    slope = float(centred @ per_step / (centred @ centred))  # least squares, as np.polyfit(..., 1) at a tenth
    quarter = steps // 4
    first, last = float(per_step[:quarter].mean()), float(per_step[-quarter:].mean())
    return slope, (last / first if first > 0 else None)


def pooled_curve(per_step: tuple[float, ...] | np.ndarray, points: int = CURVE_POINTS) -> dict:
    """``{"stride": s, "max_abs": [...]}``: the curve max-pooled over windows of ``s`` steps."""
    values = np.asarray(per_step, dtype=np.float64)
    stride = max(1, -(-len(values) // points))
    pad = (-len(values)) % stride
    padded = np.concatenate([values, np.zeros(pad)]) if pad else values
    return {"stride": stride, "max_abs": [float(v) for v in padded.reshape(-1, stride).max(axis=1)]}
