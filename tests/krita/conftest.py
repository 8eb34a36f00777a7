"""Fixtures of the Krita tests (see kritaharness.py)."""

from kritaharness import krita, krita_homes, plugin_dir  # noqa: F401
