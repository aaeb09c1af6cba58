"""Helpers shared by test modules (importable as ``helpers.<module>`` since ``tests/`` is on ``sys.path``)."""
