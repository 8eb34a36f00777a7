"""Pixels: decoding what users upload, full-resolution restoration, writing layer stacks to files."""
