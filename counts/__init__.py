"""The world's total Covid-19 case count: its sources (worldometers, WHO), their fetching
and the counters that keep the last good reading; ``scrape.py`` is its front door."""
