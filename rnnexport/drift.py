"""How far one array is from another: numbers only, no judging (``verify`` judges)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

# Error histogram: counts of |actual - expected| in half-decade bins [0, 1e-12), [1e-12, 10^-11.5), ...,
# [10^1.5, 1e2), [1e2, inf); 30 bins in all.
HISTOGRAM_EDGES = tuple(float(10.0**e) for e in np.arange(-12.0, 2.01, 0.5))
REL_FLOOR = 1e-6  # |expected| below this counts as this, so relative error near zero stays finite
CURVE_POINTS = 256  # per-timestep curves are max-pooled to at most this many points in reports


@dataclass(frozen=True)
class OutputDrift:
    """Drift of one output: ``actual`` measured against ``expected`` (the reference).

    Statistics cover elements finite on both sides; ``nonfinite_mismatches`` counts elements where
    exactly one side is NaN/Inf (or both are, differently): ``nonfinite_introduced`` of them are NaN/Inf in
    ``actual`` only, the rest are finite in ``actual`` where ``expected`` is not (a NaN hidden). ``per_step`` is the max abs error at each
    time step (outputs with a time axis only); ``growth_slope`` its least-squares slope per step and
    ``growth_ratio`` the mean error over the last quarter of the steps over the first quarter.
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

    @classmethod
    def from_arrays(cls, expected: np.ndarray, actual: np.ndarray, time_axis: int | None = None) -> OutputDrift:
        if expected.shape != actual.shape:
            raise ValueError(f"shape mismatch: expected {expected.shape}, actual {actual.shape}")
        e = expected.astype(np.float64, copy=False)
        a = actual.astype(np.float64, copy=False)
        finite = np.isfinite(e) & np.isfinite(a)
        same_nonfinite = ~finite & ((np.isnan(e) & np.isnan(a)) | (e == a))
        mismatches = int(np.count_nonzero(~finite & ~same_nonfinite))
        introduced = int(np.count_nonzero(np.isfinite(e) & ~np.isfinite(a)))
        err = np.where(finite, np.abs(a - e), 0.0)
        worst = np.unravel_index(int(np.argmax(err)), err.shape) if err.size else ()
        ref = np.where(finite, np.abs(e), 0.0)
        per_step = slope = ratio = None
        if time_axis is not None and err.size:
            per_step = err.max(axis=tuple(i for i in range(err.ndim) if i != time_axis))
            slope, ratio = _growth(per_step)
        return cls(
            max_abs=float(err.max(initial=0.0)),
            mean_abs=float(err.sum() / max(int(finite.sum()), 1)),
            rms=float(np.sqrt((err**2).sum() / max(int(finite.sum()), 1))),
            max_rel=float((err / np.maximum(ref, REL_FLOOR)).max(initial=0.0)),
            expected_max_abs=float(ref.max(initial=0.0)),
            worst_index=tuple(int(i) for i in worst),
            nonfinite_mismatches=mismatches,
            nonfinite_introduced=introduced,
            per_step=None if per_step is None else tuple(float(v) for v in per_step),
            growth_slope=slope,
            growth_ratio=ratio,
            histogram=tuple(int(c) for c in np.histogram(err[finite], bins=(0.0, *HISTOGRAM_EDGES, np.inf))[0]),
        )

    def to_dict(self) -> dict:
        data = asdict(self)
        data["worst_index"] = list(self.worst_index)
        data["histogram"] = list(self.histogram)
        data["per_step"] = None if self.per_step is None else pooled_curve(self.per_step)
        return data


def _growth(per_step: np.ndarray) -> tuple[float | None, float | None]:
    steps = len(per_step)
    if steps < 4:
        return None, None
    slope = float(np.polyfit(np.arange(steps, dtype=np.float64), per_step, 1)[0])
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
