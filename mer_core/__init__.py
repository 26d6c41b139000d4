"""mer: micro-expression recognition, orchestrated. The library; `mer_core.cli` is its entry point."""


class MerError(Exception):
    """An expected failure (bad input, data, settings or state): `mer` reports it in one
    line naming what and where, and exits 1. Every such error of the library derives from it."""
