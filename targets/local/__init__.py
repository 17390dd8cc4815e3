"""``kind: local``: the embedded default target (see :mod:`targets.local.target`)."""

from targets.local.target import LocalConfig, LocalTarget

__all__ = ["LocalConfig", "LocalTarget"]
