"""Utilities of segsr (imported lazily: this package must not import basicsr at import time)."""
