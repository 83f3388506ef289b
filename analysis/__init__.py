"""What report.py does with the stored batches: read and sum them up (batches), count
their words (words), draw them (figure) and write them out per tweet (export)."""
