"""The benchmark's report: Markdown tables of the jobs, the targets, and bench/results.md."""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

from bench.backlog import BacklogResult
from bench.load import BENCH
from bench.measure import CATEGORIES, MB, JobResult, percentile
from bench.profiles import PROFILE_SECONDS
from bench.results import COST_HEADING, replace_section, section_lines

LATENCY_RATE = 10_000  # the 2 s batches' latency target is stated at this rate


def fmt_rate(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def fmt_pair(values: list[float]) -> str:
    """``median / p99``: the median as a step is judged by it (of two batches, their mean)."""
    if not values:
        return "-"
    return f"{statistics.median(values):.2f} / {percentile(values, 99):.2f}"


def fmt_mb(value: int) -> str:
    return f"{value / MB:,.0f}" if value else "-"


def fmt_cpu(per_tweet: dict[str, float]) -> str:
    if not per_tweet:
        return "-"
    ours = " / ".join(f"{per_tweet[key]:.1f}" for key in CATEGORIES)
    return f"{ours} (+{per_tweet['other']:.1f})"


def sustained_cell(job: JobResult) -> str:
    """``≥ 40,000`` when only the feeder stopped it, ``20,000`` otherwise."""
    if job.error and not job.steps:
        return "-"
    best = job.best
    if best is None:
        return "none"
    return ("≥ " if job.feeder_limited else "") + fmt_rate(best.rate)


def ratio(full: JobResult, other: JobResult) -> tuple[float | None, str]:
    """full's sustained rate over ``other``'s; "≤" when other's is only a lower bound."""
    if not (full.best and other.best):
        return None, "-"
    value = full.best.rate / other.best.rate
    bound = other.feeder_limited and not full.feeder_limited
    return value, ("≤ " if bound else "") + f"{value:.0%}"


def stopped(job: JobResult) -> str:
    if job.error:
        return job.error
    failed = job.first_failed
    if failed is None:
        return f"all steps up to {job.steps[-1].rate:,}/s sustained" if job.steps else "-"
    return f"{failed.rate:,}/s: {failed.why}"


def jobs_table(jobs: list[JobResult], full: JobResult) -> list[str]:
    """The 2 s jobs side by side (ceiling, bare, full)."""
    def cells(fn: Any) -> str:
        return " | ".join(fn(job) for job in jobs)

    def best_attr(job: JobResult, attr: str) -> str:
        return fmt_pair(getattr(job.best, attr)) if job.best else "-"

    rows = [
        "| | " + cells(lambda j: j.plan.name) + " |",
        "|---|" + "---:|" * len(jobs),
        "| fed by | " + cells(lambda j: {"plain": "plain sender (pre-made lines)",
                                         "producer": "the product's producer"}[j.plan.feeder])
        + " |",
        "| engine | " + cells(lambda j: j.plan.engine) + " |",
        "| sustained tweets/s (≥: only the feeder could not offer more) | "
        + cells(sustained_cell) + " |",
        "| full pipeline / this | " + cells(lambda j: "-" if j is full else ratio(full, j)[1])
        + " |",
        "| first step not sustained | " + cells(stopped) + " |",
        "| batch processing p50 / p99 at the sustained rate (s) | "
        + cells(lambda j: best_attr(j, "processing_s")) + " |",
        "| tweet-to-stored p50 / p99 at the sustained rate (s) | "
        + cells(lambda j: best_attr(j, "latencies_s") if j.plan.kind == "full"
                else "- (stores nothing)") + " |",
        "| first batch out after the job's start (s) | "
        + cells(lambda j: f"{j.first_batch_s:.1f}" if j.first_batch_s else "-") + " |",
        "| CPU µs per tweet at the sustained rate: feeder / JVM / driver / workers "
        "(+ other processes) | "
        + cells(lambda j: fmt_cpu(j.best.cpu_us_per_tweet) if j.best else "-") + " |",
    ]
    for label, category in (("peak RSS feeder (MB)", "producer"),
                            ("peak RSS Spark: driver + JVM + workers (MB)", "spark")):
        rows.append(f"| {label} | "
                    + cells(lambda j, c=category: fmt_mb(j.sampler.peak(c)) if j.sampler
                            else "-") + " |")
    return rows


def default_table(jobs: list[JobResult]) -> list[str]:
    """The default settings' jobs side by side (DStreams, Structured Streaming)."""
    def cells(fn: Any) -> str:
        return " | ".join(fn(job) for job in jobs)

    def held(job: JobResult) -> str:
        top = max(job.steps, key=lambda s: s.held_max) if job.steps else None
        return f"{top.held_max:,} at {top.rate:,}/s, {fmt_mb(top.producer_rss)}" if top else "-"

    return [
        "| | " + cells(lambda j: j.plan.name) + " |",
        "|---|" + "---:|" * len(jobs),
        "| engine | " + cells(lambda j: j.plan.engine) + " |",
        "| sustained tweets/s | " + cells(sustained_cell) + " |",
        "| first step not sustained | " + cells(stopped) + " |",
        "| batch processing p50 / p99 at the sustained rate (s) | "
        + cells(lambda j: fmt_pair(j.best.processing_s) if j.best else "-") + " |",
        "| tweet-to-stored p50 / p99 at the sustained rate (s) | "
        + cells(lambda j: fmt_pair(j.best.latencies_s) if j.best else "-") + " |",
        "| first batch stored after the job's start (s) | "
        + cells(lambda j: f"{j.first_batch_s:.1f}" if j.first_batch_s else "-") + " |",
        "| CPU µs per tweet at the sustained rate: producer / JVM / driver / workers | "
        + cells(lambda j: fmt_cpu(j.best.cpu_us_per_tweet) if j.best else "-") + " |",
        "| tweets held by the producer at most, and its RSS then (MB) | " + cells(held) + " |",
    ]


def backlog_table(backlog: BacklogResult) -> list[str]:
    def mb(value: int) -> str:
        return f"{fmt_mb(value)} MB"

    return [
        "| | |",
        "|---|---:|",
        f"| offered (1,000/s until the first batch is stored, then {backlog.rate:,}/s until "
        f"{backlog.down_s:g} s after the kill) | "
        f"{backlog.offered:,} |",
        f"| refused (journal full) | {backlog.refused:,} |",
        f"| held by the producer at most (not acknowledged) | {backlog.held_max:,} |",
        f"| producer RSS then | {mb(backlog.rss_at_held_max)} |",
        f"| producer RSS at most, whole check | {mb(backlog.rss_peak)} |",
        f"| journal on disk then | {mb(backlog.journal_bytes_max)} |",
        "| restart to everything acknowledged (s) | "
        + (f"{backlog.catch_up_s:.1f}" if backlog.catch_up_s is not None else "-") + " |",
        f"| in the store: tweets / distinct | {backlog.stored:,} / {backlog.unique:,} |",
        f"| lost / stored twice | {backlog.lost:,} / {backlog.twice:,} |",
        *([f"| error | {backlog.error} |"] if backlog.error else []),
    ]


def targets(jobs: dict[str, JobResult], backlog: BacklogResult | None,
            parse_rows: list[dict[str, Any]], producer_alone_us: float | None = None
            ) -> list[str]:
    """The issue's targets, each with what was measured and whether it is met."""

    def row(target: str, measured: str, ok: bool | None) -> str:
        verdict = "-" if ok is None else ("met" if ok else "**missed**")
        return f"| {target} | {measured} | {verdict} |"

    lines = ["| target | measured | |", "|---|---|---|"]
    full, bare, ceiling = jobs.get("full"), jobs.get("bare"), jobs.get("ceiling")
    if full and bare:
        value, text = ratio(full, bare)
        lines.append(row("full pipeline ≥ 75 % of the bare receiver's sustained rate (2 s)",
                         text, None if value is None else value >= 0.75))
    if full and ceiling:
        value, text = ratio(full, ceiling)
        lines.append(row("stretch: full pipeline ≥ 50 % of the plain-sender ceiling (2 s)",
                         text, None if value is None else value >= 0.5))
    default = jobs.get("default")
    if default is not None:
        best = default.best
        p99 = percentile(best.latencies_s, 99) if best else None
        measured = (f"{sustained_cell(default)}/s; tweet-to-stored p99 there "
                    + (f"{p99:.1f} s" if p99 is not None else "-"))
        lines.append(row(f"{default.plan.interval:g} s batches sustain ≥ 30,000 tweets/s with "
                         f"tweet-to-stored p99 ≤ {default.plan.interval + 2:g} s", measured,
                         None if best is None else (best.rate >= 30_000 and p99 is not None
                                                    and p99 <= default.plan.interval + 2)))
    # issue #16's saturation targets
    if full is not None:
        best = full.best
        lines.append(row("full pipeline ≥ 40,000 posts/s at 2 s batches",
                         f"{sustained_cell(full)}/s" + (
                             f" ({ratio(full, ceiling)[1]} of the plain-sender ceiling)"
                             if ceiling else ""),
                         None if best is None else best.rate >= 40_000))
    if default is not None:
        best = default.best
        p99 = percentile(best.processing_s, 99) if best else None
        calm = [s for s in default.steps if s.sustained and s.processing_s
                and (percentile(s.processing_s, 99) or 0) <= default.plan.interval / 2]
        lines.append(row(
            f"≥ 35,000 posts/s at {default.plan.interval:g} s batches with batch processing "
            f"p99 ≤ {default.plan.interval / 2:g} s",
            f"{sustained_cell(default)}/s, batch p99 there "
            + ("-" if p99 is None else f"{p99:.1f} s")
            + (f"; p99 ≤ {default.plan.interval / 2:g} s up to "
               f"{max(s.rate for s in calm):,}/s" if calm else ""),
            None if best is None else any(s.rate >= 35_000 for s in calm)))
    feeder_us = [(job.plan.name, job.best.cpu_us_per_tweet["producer"])
                 for job in (bare, full) if job is not None and job.best is not None
                 and "producer" in job.best.cpu_us_per_tweet]
    if producer_alone_us is not None:
        feeder_us.insert(0, ("alone, median", producer_alone_us))
    if feeder_us:
        lines.append(row("producer ≤ 8 µs of CPU a post at saturation",
                         "; ".join(f"{us:.1f} µs ({name})" for name, us in feeder_us),
                         all(us <= 8 for _, us in feeder_us)))
    if backlog is not None:
        lines.append(row(
            "producer RSS ≤ 150 MB while it holds 1,000,000 unacknowledged tweets; after "
            "the restart all stored, none twice",
            f"{backlog.held_max:,} held in {fmt_mb(backlog.rss_at_held_max)} MB; "
            f"{backlog.lost:,} lost, {backlog.twice:,} twice"
            + (f" ({backlog.error})" if backlog.error else ""),
            backlog.held_max >= 1_000_000 and backlog.rss_at_held_max <= 150 * MB
            and backlog.passed))
    structured = jobs.get("structured")
    if full and structured:
        value, text = ratio(structured, full)
        lines.append(row("structured engine ≥ 80 % of the DStream engine's sustained rate (2 s)",
                         f"{text} ({sustained_cell(structured)} vs {sustained_cell(full)}/s)",
                         None if value is None else value >= 0.8))
    structured_default = jobs.get("structured-default")
    if structured_default is not None and structured_default.best is not None:
        best = structured_default.best
        p99 = percentile(best.latencies_s, 99)
        lines.append(row(f"structured engine, {structured_default.plan.interval:g} s batches: "
                         "sustained, and tweet-to-stored p99 there (no target; DStreams' above)",
                         f"{sustained_cell(structured_default)}/s, p99 "
                         + ("-" if p99 is None else f"{p99:.1f} s"), None))
    for job in (full, default):
        if job is not None:
            interval = job.plan.interval
            first = job.first_batch_s
            lines.append(row(f"{interval:g} s batches: first batch stored ≤ batch interval + "
                             f"15 s = {interval + 15:g} s after start",
                             "-" if first is None else f"{first:.1f} s",
                             None if first is None else first <= interval + 15))
    if full is not None and (step := full.step_at(LATENCY_RATE)) is not None:
        p99 = percentile(step.latencies_s, 99)
        lines.append(row(f"2 s batches: tweet-to-stored p99 ≤ 4 s at {LATENCY_RATE:,}/s",
                         "-" if p99 is None else f"{p99:.2f} s",
                         None if p99 is None else p99 <= 4))
    parse_ratio = max((r["ratio"] for r in parse_rows), default=None)
    lines.append(row("case-count parse ≤ 1/5 of a full parse (1 MB page)",
                     "-" if parse_ratio is None else f"1/{1 / parse_ratio:,.0f}",
                     None if parse_ratio is None else parse_ratio <= 0.2))
    return lines


def step_table(job: JobResult) -> list[str]:
    rows = [f"**{job.name}** ({job.plan.interval:g} s batches; coarse steps x{job.plan.factor:g}"
            f", fine steps marked *)" + (f" — {job.error}" if job.error else ""), "",
            "| offered (target) | offered | received | processing p50 / p99 (s) | "
            "scheduling delay first → last (s) | tweet-to-stored p50 / p99 (s) | "
            "tweets held by the producer (max) | feeder / Spark RSS (MB) | "
            "CPU µs per tweet: feeder / JVM / driver / workers (+ other processes) | "
            "machine CPU busy | sustained |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for s in sorted(job.steps, key=lambda s: s.rate):
        sched = (f"{s.scheduling_s[0]:.2f} → {s.scheduling_s[-1]:.2f}"
                 if s.scheduling_s else "-")
        rows.append(f"| {s.rate:,}{' *' if s.fine else ''} | {s.offered:,.0f} | "
                    f"{s.received:,.0f} | {fmt_pair(s.processing_s)} | {sched} | "
                    f"{fmt_pair(s.latencies_s)} | {s.held_max:,} | "
                    f"{fmt_mb(s.producer_rss)} / {fmt_mb(s.spark_rss)} | "
                    f"{fmt_cpu(s.cpu_us_per_tweet)} | {s.machine_cpu_share:.0%} | "
                    f"{'yes' if s.sustained else 'no: ' + s.why} |")
    return rows


def parse_table(rows: list[dict[str, Any]]) -> list[str]:
    lines = ["| page (~1 MB, bench/bigpage.py) | bytes | full `BeautifulSoup(html, "
             "\"html.parser\")` (ms) | `scrape.parse_total_cases` (ms) | ratio |",
             "|---|---:|---:|---:|---:|"]
    for row in rows:
        lines.append(f"| {row['page']} | {row['bytes']:,} | {row['full_ms']:.1f} | "
                     f"{row['fast_ms']:.2f} | 1/{1 / row['ratio']:,.0f} |")
    return lines


def profile_lines(job: JobResult) -> list[str]:
    lines = [f"## Where the full pipeline's time goes (py-spy, {PROFILE_SECONDS} s at "
             f"{job.profile_rate:,} tweets/s)", "",
             "CPU-busy seconds per second of each Python process, and the share of those "
             "samples spent in each function (callees included; entry frames left out). "
             "The JVM's share is in the CPU columns above.", ""]
    for profile in job.profiles:
        if profile.error:
            lines += [f"* **{profile.name}**: {profile.error}", ""]
            continue
        top = "; ".join(f"{key} {share:.0%}" for key, share in profile.top)
        lines += [f"* **{profile.name}**, {profile.busy_s:.2f} CPU s/s: {top}", ""]
    return lines


def write_report(output: Path, about: dict[str, str], master: str, jobs: dict[str, JobResult],
                 backlog: BacklogResult | None, checks: list[str],
                 parse_rows: list[dict[str, Any]], source_lines: list[str],
                 took: float, post_lines: list[str] | None = None,
                 producer_lines: list[str] | None = None) -> None:
    two_second = [jobs[key] for key in ("ceiling", "bare", "full", "structured") if key in jobs]
    full = jobs.get("full")
    lines = [
        "# Benchmark results",
        "",
        f"Written by `make bench` (`python -m bench.run`) on "
        f"{time.strftime('%Y-%m-%d %H:%M %Z')}, in {took / 60:.1f} minutes. Absolute numbers "
        "are noisy on a shared 2-core machine (the \"other processes\" CPU column shows what "
        "else ran); compare within one run.",
        "",
        "## Machine",
        "",
        *(f"* {key}: {value}" for key, value in about.items()),
        f"* Spark master `{master}` for every job",
        "* each job: a coarse pass of rate steps (times a factor) until one is not sustained, then "
        "a fine pass until the last sustained and the first failed steps are ≤ 10 % apart; "
        "a step is measured on whole batches after a warm-up, and is sustained when Spark "
        "received what was offered, batches took less than the interval and the scheduling "
        "delay stayed flat",
        "",
    ]
    if two_second and full is not None:
        lines += ["## Ceiling, bare receiver and full pipeline on both engines (2 s batches)",
                  "", *jobs_table(two_second, full), ""]
    defaults = [jobs[key] for key in ("default", "structured-default") if key in jobs]
    if defaults:
        lines += [f"## The default settings ({defaults[0].plan.interval:g} s batches)", "",
                  *default_table(defaults), ""]
    if backlog is not None:
        lines += [f"## A held backlog: the job SIGKILLed for {backlog.down_s:g} s "
                  f"({backlog.interval:g} s batches, numbered tweets)", "",
                  *backlog_table(backlog), ""]
    lines += ["## Targets", "", *checks, "",
              "## Case-count parse on a full-size page", "", *parse_table(parse_rows), "",
              "## The Bluesky source (`python -m bench.bluesky`)", "",
              *(source_lines or ["Skipped (--skip-sources)."]), "",
              "## Post fields, off vs on (`python -m bench.post_fields`)", "",
              *(post_lines or ["Not run."]), "",
              "## The producer alone at saturation (`python -m bench.producer_cost`)", "",
              *(producer_lines or ["Not run."]), "",
              "## Every step", ""]
    for job in jobs.values():
        lines += [*step_table(job), ""]
    if full is not None and full.profiles:
        lines += profile_lines(full)
    notes = BENCH / "notes.md"
    if notes.exists():
        lines += [notes.read_text(encoding="utf-8").rstrip(), ""]
    text = "\n".join(lines)
    # bench.cost's section: make bench writes it after this run, so the last one stays
    kept = section_lines(output, COST_HEADING)
    if kept:
        text = replace_section(text, COST_HEADING, kept)
    output.write_text(text, encoding="utf-8")
