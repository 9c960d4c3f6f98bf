"""From wrk runs to figures: medians across rounds, and each ratio within one run."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from statistics import median

from .suite import Measurement, Metric, Ratio
from .wrk import WrkResult


@dataclass
class Series:
    """Every round of one measurement, in the order they ran."""

    measurement: Measurement
    runs: list[WrkResult] = field(default_factory=list)
    background_runs: list[WrkResult] = field(default_factory=list)
    load_averages: list[float] = field(default_factory=list)
    # Server CPU time per request (µs): steadier than rps on a busy machine, since
    # another program's load slows the server down but hardly changes its work.
    cpu_us: list[float | None] = field(default_factory=list)
    # Redis CPU time per request (µs), all nodes together: what one request costs the
    # Redis side, so 1 s / this is what one Redis core can serve.
    redis_cpu_us: list[float | None] = field(default_factory=list)


@dataclass(frozen=True)
class Summary:
    label: str
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    cache_share: float | None  # share of responses with the expected X-Cache value
    command: str
    cpu_us: float | None = None
    redis_cpu_us: float | None = None

    def problems(self, expected_cache: str | None) -> list[str]:
        found = []
        if self.rps == 0:
            found.append(f"{self.label}: no request completed within the run")
        if self.errors:
            found.append(f"{self.label}: {self.errors} failed requests")
        if expected_cache and self.cache_share is not None and self.cache_share < 0.99:
            found.append(f"{self.label}: only {self.cache_share:.0%} {expected_cache}")
        return found


def summarize(series: Series) -> Summary:
    runs = series.runs
    expected = series.measurement.expect_cache
    share = None
    if expected:
        counts: dict[str, int] = {}
        for run in runs:
            for value, n in run.header_counts.items():
                counts[value] = counts.get(value, 0) + n
        total = sum(counts.values())
        share = counts.get(expected, 0) / total if total else 0.0
    return Summary(
        label=series.measurement.label,
        rps=median(run.rps for run in runs),
        p50_ms=median(run.p50_ms for run in runs),
        p99_ms=median(run.p99_ms for run in runs),
        errors=sum(run.error_count for run in runs),
        cache_share=share,
        command=runs[0].command,
        cpu_us=_median_or_none(series.cpu_us),
        redis_cpu_us=_median_or_none(series.redis_cpu_us),
    )


def _median_or_none(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return median(known) if known and len(known) == len(values) else None


def _divide(a: float, b: float) -> float:
    # A side that completed no request at all makes the ratio infinite, not an error.
    if b == 0:
        return math.inf if a > 0 else math.nan
    return a / b


def ratio_of(metric: Metric, numerator: WrkResult, denominator: WrkResult) -> float:
    if metric is Metric.THROUGHPUT:
        return _divide(numerator.rps, denominator.rps)
    if metric is Metric.SPEEDUP_P50:
        return _divide(denominator.p50_ms, numerator.p50_ms)
    return _divide(numerator.p99_ms, denominator.p99_ms)


@dataclass(frozen=True)
class RatioResult:
    ratio: Ratio
    value: float | None = None
    per_round: tuple[float, ...] = ()
    numerator: Summary | None = None
    denominator: Summary | None = None
    problems: tuple[str, ...] = ()
    skipped: str | None = None
    # The same ratio from server CPU per request (throughput ratios only).
    by_cpu: float | None = None

    @property
    def passed(self) -> bool | None:
        if self.value is None:
            return None
        return self.ratio.passes(self.value)


def evaluate(ratio: Ratio, series: dict[str, Series]) -> RatioResult:
    """The median of the per-round ratios: each round compares runs made minutes apart
    at most, so a machine that slows down during the run moves both sides."""
    num, den = series[ratio.numerator], series[ratio.denominator]
    rounds = min(len(num.runs), len(den.runs))
    values = tuple(
        value
        for i in range(rounds)
        if not math.isnan(value := ratio_of(ratio.metric, num.runs[i], den.runs[i]))
    )
    num_summary, den_summary = summarize(num), summarize(den)
    problems = num_summary.problems(num.measurement.expect_cache) + den_summary.problems(
        den.measurement.expect_cache
    )
    by_cpu = None
    if ratio.by_cpu and ratio.metric is Metric.THROUGHPUT:
        pairs = zip(num.cpu_us[:rounds], den.cpu_us[:rounds], strict=True)
        cpu_values = [d / n for n, d in pairs if n and d]
        by_cpu = median(cpu_values) if len(cpu_values) == rounds and rounds else None
    return RatioResult(
        ratio=ratio,
        by_cpu=by_cpu,
        value=median(values) if values else None,
        per_round=values,
        numerator=num_summary,
        denominator=den_summary,
        problems=tuple(problems),
    )
