"""Fixtures of the Krita tests (see kritaharness.py)."""

from kritaharness import krita, plugin_dir  # noqa: F401
