"""Benchmark profiles shipped with segsr (``smoke``, ``quick``, ``full``): package data read by
:mod:`segsr.bench.profile`."""
