"""``WxcodePtyError``: the one base class of every error the plugin raises for a host to catch.

Each concept keeps its own exceptions in its own module (``SpawnError`` in ``pty.py``,
``SessionLimitReached`` in ``manager.py``, ...); they all derive from this class, so a host can
catch everything of ours with one ``except``.
"""

from __future__ import annotations

__all__ = ["WxcodePtyError"]


class WxcodePtyError(Exception):
    """Base class of the plugin's errors."""
