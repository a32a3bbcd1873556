"""The benchmark harness of ``make bench`` (entry point: ``bench/run.py``)."""
