"""The Spark job's working parts, beside ``spark_streaming.py``, its command line.

Whatever engine runs the job feeds one path: a batch of wire lines, parsed and
cleaned on the executors (:mod:`transform`), then :class:`job.writer.BatchWriter`
on the driver (drop what was stored already, fetch the case count once, build
and store the document, acknowledge). The modules:

* :mod:`job.batch`: what a batch came to (``BatchStats``), the ids seen lately,
  the quarantine of malformed lines;
* :mod:`job.writer`: ``BatchWriter``, the driver's part of each batch;
* :mod:`job.dstream`: the DStream engine's one-task merge and its stop once the
  batch in flight is stored;
* :mod:`job.listeners`: what Spark's own events tell the person running the job;
* :mod:`job.spark_setup`: how the SparkContext is made.
"""
