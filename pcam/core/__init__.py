"""Shared infrastructure: errors, paths, atomic file writes, library shims, the machine."""
