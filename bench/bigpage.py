"""A full-size (~1 MB) worldometers-like page, made from the project's saved page.

The real worldometers.info/coronavirus page is about 1 MB: three country tables
(today, yesterday, two days ago) of ~230 rows and ~20 columns each, plus chart
data and scripts. ``samples/worldometers.html`` is a 23 KB model of it;
bench.worldometers_page grows it to full size, deterministically (seeded),
keeping its three counters (``Coronavirus Cases:`` stays 704,753,890), and this
command writes it out::

    python -m bench.bigpage > /tmp/big.html              # counters at the top, as on the site
    python -m bench.bigpage --counters-last > /tmp/b.html  # the label ~1 MB into the page
"""

from __future__ import annotations

import argparse
import sys

from bench.worldometers_page import TARGET_BYTES, build_page


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bytes", type=int, default=TARGET_BYTES)
    parser.add_argument("--counters-last", action="store_true")
    args = parser.parse_args(argv)
    sys.stdout.write(build_page(args.bytes, counters_last=args.counters_last))
    return 0


if __name__ == "__main__":
    sys.exit(main())
