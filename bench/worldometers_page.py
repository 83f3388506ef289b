"""A full-size (~1 MB) worldometers-like page, grown deterministically from the saved
sample (``samples/worldometers.html``), its three counters kept."""

from __future__ import annotations

import random
from pathlib import Path

SAMPLE = Path(__file__).resolve().parents[1] / "samples" / "worldometers.html"
TARGET_BYTES = 1_000_000
SEED = 19
CASES = 704_753_890

_CONTINENTS = ("Asia", "Europe", "Africa", "North America", "South America",
               "Australia/Oceania")
_SYLLABLES = ("ka", "ri", "to", "ma", "lan", "dor", "be", "si", "gua", "nes", "tia",
              "mor", "que", "val", "zu", "ar", "bia", "stan", "land", "o")


def _number(value: int) -> str:
    return f"{value:,}"


def _country_name(rng: random.Random) -> str:
    name = "".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(2, 4)))
    return name.capitalize() + (" " + rng.choice(_SYLLABLES).capitalize()
                                if rng.random() < 0.15 else "")


def _row(rng: random.Random, rank: int) -> str:
    """One country row with the real table's 19 columns."""
    name = _country_name(rng)
    slug = name.lower().replace(" ", "-")
    population = rng.randint(10_000, 1_450_000_000)
    cases = rng.randint(0, population // 2)
    deaths = cases // rng.randint(80, 400)
    recovered = max(cases - deaths - rng.randint(0, 50_000), 0)
    active = max(cases - deaths - recovered, 0)
    tests = cases * rng.randint(2, 20)
    cells = [
        f'<td style="font-size:12px;color: grey;text-align:center;vertical-align:middle;">'
        f"{rank}</td>",
        f'<td style="font-weight: bold; font-size:15px; text-align:left;">'
        f'<a class="mt_a" href="country/{slug}/">{name}</a></td>',
        f'<td style="font-weight: bold; text-align:right">{_number(cases)}</td>',
        f'<td style="font-weight: bold; text-align:right;">+{rng.randint(0, 900)}</td>',
        f'<td style="font-weight: bold; text-align:right;">{_number(deaths)} </td>',
        '<td style="font-weight: bold; text-align:right;"></td>',
        f'<td style="font-weight: bold; text-align:right">{_number(recovered)}</td>',
        '<td style="font-weight: bold; text-align:right;"></td>',
        f'<td style="text-align:right;font-weight:bold;">{_number(active)}</td>',
        f'<td style="font-weight: bold; text-align:right;">{rng.randint(0, 900)}</td>',
        f'<td style="font-weight: bold; text-align:right">'
        f"{_number(cases * 1_000_000 // population)}</td>",
        f'<td style="font-weight: bold; text-align:right">'
        f"{_number(deaths * 1_000_000 // population)}</td>",
        f'<td style="font-weight: bold; text-align:right">{_number(tests)}</td>',
        f'<td style="font-weight: bold; text-align:right">'
        f"{_number(tests * 1_000_000 // population)}</td>",
        f'<td style="font-weight: bold; text-align:right">'
        f'<a href="/world-population/{slug}-population/">{_number(population)}</a></td>',
        f'<td style="display:none" data-continent="{(c := rng.choice(_CONTINENTS))}">'
        f"{c}</td>",
        f'<td style="font-weight: bold; text-align:right">{rng.randint(1, 40)}</td>',
        f'<td style="font-weight: bold; text-align:right">{rng.randint(10, 9000)}</td>',
        f'<td style="font-weight: bold; text-align:right">{rng.randint(1, 90)}</td>',
    ]
    return '<tr style="">\n' + "\n".join(cells) + "\n</tr>\n"


def _table(rng: random.Random, table_id: str, rows: int) -> str:
    head = "".join(f'<th width="20">Column<br>{i}</th>' for i in range(19))
    body = "".join(_row(rng, rank) for rank in range(1, rows + 1))
    return (
        f'<div class="main_table_countries_div">\n<table id="{table_id}" '
        'class="table table-bordered table-hover main_table_countries" '
        'style="width:100%;margin-top: 0px !important;display:none;">\n'
        f"<thead><tr>{head}</tr></thead>\n<tbody>\n{body}</tbody>\n</table>\n</div>\n"
    )


def _chart_script(rng: random.Random, name: str, points: int) -> str:
    dates = ", ".join(f'"Jan {d % 28 + 1}, {2020 + d // 336}"' for d in range(points))
    data = ", ".join(str(rng.randint(0, 9_000_000)) for _ in range(points))
    return (
        f"<script type=\"text/javascript\">\nHighcharts.chart('{name}', {{\n"
        f"  chart: {{ type: 'line' }}, title: {{ text: '{name}' }},\n"
        f"  xAxis: {{ categories: [{dates}] }},\n"
        f"  series: [{{ name: 'Cases', color: '#33CCFF', lineWidth: 5, data: [{data}] }}]\n"
        "});\n</script>\n"
    )


def build_page(target_bytes: int = TARGET_BYTES, *, counters_last: bool = False,
               seed: int = SEED) -> str:
    """A page of at least ``target_bytes`` UTF-8 bytes with the sample's three counters.

    ``counters_last`` moves the counter blocks after the tables, the worst
    place for a parser that looks for the label first.
    """
    rng = random.Random(seed)
    sample = SAMPLE.read_text(encoding="utf-8")
    counters_start = sample.index('  <div id="maincounter-wrap"')
    counters_end = sample.index('  <div class="row">')
    tables_at = sample.index('  <h3 id="countries">')
    head, counters = sample[:counters_start], sample[counters_start:counters_end]
    middle, rest = sample[counters_end:tables_at], sample[tables_at:]

    charts = "".join(_chart_script(rng, f"coronavirus-chart-{i}", 1300) for i in range(6))
    tables: list[str] = []
    size = len((head + counters + middle + rest + charts).encode())
    table_ids = ("main_table_countries_today", "main_table_countries_yesterday",
                 "main_table_countries_yesterday2")
    while size < target_bytes:
        table_id = table_ids[len(tables) % 3] + ("" if len(tables) < 3 else f"_{len(tables)}")
        rows = min(230, max(1, (target_bytes - size) // 1150 + 1))
        tables.append(_table(rng, table_id, rows))
        size += len(tables[-1].encode())
    body = charts + "".join(tables)
    if counters_last:
        return head + middle + body + counters + rest
    return head + counters + middle + body + rest
