"""The soak benchmark's report: targets met or missed, drift, the samples, and a plot."""

from __future__ import annotations

import math
import time
from pathlib import Path

from bench.soak_figures import (
    JOURNAL_SLACK,
    MAX_BATCH_P50_RATIO,
    MAX_JOB_RSS_DRIFT_PCT,
    MAX_PRODUCER_RSS,
    MB,
    TARGET_BATCH_SECONDS,
    TARGET_MINUTES,
    Drift,
    Run,
    Sample,
    drift,
)


def _mb(value: float | None) -> str:
    return "-" if value is None else f"{value / MB:,.1f}"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def targets(run: Run, figures: Drift, segment_bytes: int) -> list[str]:
    """The issue's targets as table rows: what was measured, met or missed (a run that
    failed is judged on its length only)."""
    def row(target: str, measured: str, ok: bool | None, *, even_if_failed: bool = False
            ) -> str:
        if run.error and not even_if_failed:
            ok = None
        return f"| {target} | {measured} | {'-' if ok is None else 'met' if ok else '**missed**'} |"

    count, rss_drift, ratio = run.count, figures.job_rss_drift_pct, figures.batch_p50_ratio
    minutes = run.duration / 60
    return [
        "| target | measured | |", "|---|---|---|",
        row(f"a {TARGET_MINUTES}-minute soak with {TARGET_BATCH_SECONDS:g} s batches",
            f"{minutes:.1f} minutes, {run.batch_seconds:g} s batches",
            minutes >= TARGET_MINUTES * 0.99 and run.batch_seconds == TARGET_BATCH_SECONDS,
            even_if_failed=True),
        row("0 posts lost, 0 stored twice",
            "-" if count is None else f"{count.lost:,} lost, {count.twice:,} twice"
            + (f", {count.foreign:,} unknown texts" if count.foreign else ""),
            None if count is None else count.exact),
        row(f"job memory drift ≤ {MAX_JOB_RSS_DRIFT_PCT:g} %",
            "-" if rss_drift is None else f"{rss_drift:+.1f} %",
            None if rss_drift is None else rss_drift <= MAX_JOB_RSS_DRIFT_PCT),
        row(f"batch p50 drift ≤ {MAX_BATCH_P50_RATIO:g}x",
            "-" if ratio is None else f"{ratio:.2f}x",
            None if ratio is None else ratio <= MAX_BATCH_P50_RATIO),
        row(f"producer RSS ≤ {MAX_PRODUCER_RSS / MB:g} MB", f"{_mb(figures.producer_rss_max)} MB",
            None if not run.samples else figures.producer_rss_max <= MAX_PRODUCER_RSS),
        row("the journal on disk bounded (its largest in the last third at most "
            f"{JOURNAL_SLACK:g}x the larger of the middle third's and one segment, "
            f"{segment_bytes / MB:g} MB)",
            f"{_mb(figures.journal_max_middle)} → {_mb(figures.journal_max_last)} MB",
            None if not run.samples else figures.journal_bounded(segment_bytes)),
    ]


def plot(path: Path, samples: list[Sample], duration: float) -> None:
    """RSS and batch p50 over time, in a small PNG."""
    # matplotlib only here, for the plot: it is slow to import, and its backend must be
    # chosen before pyplot is imported
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    minutes = [s.t / 60 for s in samples]
    figure, (memory, batches) = plt.subplots(2, 1, figsize=(7, 4.5), sharex=True, dpi=80)
    memory.plot(minutes, [s.job_rss / MB for s in samples], label="job (driver + JVM + workers)")
    memory.plot(minutes, [s.jvm_rss / MB for s in samples], label="JVM", linestyle="--")
    memory.plot(minutes, [s.producer_rss / MB for s in samples], label="producer")
    memory.set_ylabel("RSS (MB)")
    memory.set_ylim(bottom=0)
    memory.legend(fontsize="small")
    batches.plot(minutes, [s.batch_p50_ms if s.batch_p50_ms is not None else math.nan
                           for s in samples], marker=".")
    batches.set_ylabel("batch p50 (ms)")
    batches.set_ylim(bottom=0)
    batches.set_xlabel("minutes since the first batch (dotted: the thirds)")
    for axes in (memory, batches):
        for third in (1, 2):
            axes.axvline(duration / 60 * third / 3, color="grey", linestyle=":")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def sample_rows(samples: list[Sample], at_most: int = 40) -> list[str]:
    """The samples as a table, every k-th one when there are more than ``at_most``."""
    step = max(1, math.ceil(len(samples) / at_most))
    rows = ["| min | producer RSS | job RSS (driver / JVM / workers) | batches | batch p50 (ms) "
            "| journal | store | logs (KB) |", "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for s in samples[::step]:
        rows.append(f"| {s.t / 60:.1f} | {_mb(s.producer_rss)} | {_mb(s.job_rss)} "
                    f"({_mb(s.driver_rss)} / {_mb(s.jvm_rss)} / {_mb(s.workers_rss)}) | "
                    f"{s.batches} | {_ms(s.batch_p50_ms)} | {_mb(s.journal_bytes)} | "
                    f"{_mb(s.store_bytes)} | {s.log_bytes / 1024:,.0f} |")
    note = (f"Every {step}th sample of {len(samples)} ({run_every(samples) * step:g} s apart). "
            if step > 1 else "")
    return [f"{note}Sizes and RSS in MB but for the logs.", "", *rows]


def run_every(samples: list[Sample]) -> float:
    return round(samples[1].t - samples[0].t) if len(samples) > 1 else 0


def write_report(output: Path, run: Run, about: dict[str, str], segment_bytes: int) -> list[str]:
    """Write the Markdown report and its plot; the targets' rows."""
    figures = drift(run.samples, run.batches, run.duration)
    checks = targets(run, figures, segment_bytes)
    image = output.with_suffix(".png")
    if run.samples:
        plot(image, run.samples, run.duration)
    smoke = run.minutes < TARGET_MINUTES
    count, summary = run.count, run.summary
    lines = [
        "# Soak benchmark" + (f" — a {run.minutes:g}-minute smoke run" if smoke else ""),
        "",
        *([f"**A {run.minutes:g}-minute smoke run, not the {TARGET_MINUTES}-minute soak the "
           "targets are stated for: drift over a few minutes says little. Run `make soak` for "
           "the real one.**", ""] if smoke else []),
        f"Written by `make soak` (`python -m bench.soak --minutes {run.minutes:g}`) on "
        f"{time.strftime('%Y-%m-%d %H:%M %Z')}. Both real programs: `stream.py --source replay "
        f"--rate {run.rate:g}` (unique posts) and `spark_streaming.py --batch-seconds "
        f"{run.batch_seconds:g} --master {run.master}` with the embedded store, sampled every "
        f"{run.every:g} s from the first batch for {run.duration / 60:.1f} minutes, then stopped "
        "with SIGTERM (the job first) and the store and journal read back.",
        "",
        *([f"**The run failed: {run.error}**", ""] if run.error else []),
        "## Machine", "", *(f"* {key}: {value}" for key, value in about.items()), "",
        "## Targets", "", *checks, "",
        "## Drift: the last third of the run against the middle third", "",
        "| | middle third | last third | |", "|---|---:|---:|---:|",
        f"| job RSS, median of the samples (MB) | {_mb(figures.job_rss_middle)} | "
        f"{_mb(figures.job_rss_last)} | "
        + ("-" if figures.job_rss_drift_pct is None else f"{figures.job_rss_drift_pct:+.1f} %")
        + " |",
        f"| batch processing p50 (ms) | {_ms(figures.batch_p50_middle_ms)} | "
        f"{_ms(figures.batch_p50_last_ms)} | "
        + ("-" if figures.batch_p50_ratio is None else f"{figures.batch_p50_ratio:.2f}x") + " |",
        f"| journal on disk, largest (MB) | {_mb(figures.journal_max_middle)} | "
        f"{_mb(figures.journal_max_last)} | |",
        f"| producer RSS, largest of the run (MB) | | {_mb(figures.producer_rss_max)} | |",
        "",
        "## Posts", "",
        "| written to the replay file | sent (emitted) | refused (journal full) | in the store "
        "| distinct | stored twice | held in the journal at the stop | lost |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
        f"| {run.posts_written:,} | " + (
            "- | - | - | - | - | - | - |" if count is None else
            f"{count.sent:,} | {count.refused:,} | {count.stored:,} | {count.distinct:,} | "
            f"{count.twice:,} | {count.held:,} | {count.lost:,} |"),
        "",
        f"Batches completed: {len(run.batches):,}"
        + (f" ({len(run.batches) / run.duration:.2f} a second)" if run.duration else "")
        + (f"; the producer emitted {summary.emitted / run.producer_seconds:,.0f} posts a "
           f"second from its start (before the job's first batch too) and sent "
           f"{summary.sent:,} lines, resends included" if summary and run.producer_seconds
           else "")
        + ". ERROR lines logged before the stop: "
        + (", ".join(f"{name} {n:,}" for name, n in run.errors.items()) or "-")
        + f". Exit status: job {run.job_exit}, producer {run.producer_exit} (None: killed).",
        "",
        *([f"![RSS and batch p50 over time]({image.name})", ""] if run.samples else []),
        "## Samples", "", *sample_rows(run.samples), "",
    ]
    output.write_text("\n".join(lines), encoding="utf-8")
    return checks
