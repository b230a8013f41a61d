"""Composition root: settings, wiring and the `nvrag` command line."""
