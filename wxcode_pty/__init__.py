"""wxcode-pty: long-running terminal programs in server-side PTYs, streamed to browsers.

Mount :func:`create_app` into an aiohttp application; see the README for the protocol.
"""

from .buffer import ReplayBuffer
from .claude import ClaudeCommand
from .commands import ShellCommand
from .errors import WxcodePtyError
from .manager import InvalidProjectId, PTYSessionManager, SessionLimitReached, ShuttingDown
from .pty import BidirectionalPTY, ExitStatus, InputOverflow, PTYClosed, SpawnError
from .session import CloseReason, PTYSession
from .settings import Settings
from .store import MigrationError, SessionStatus, SessionStore, StoreLocked
from .web import create_app, get_session_manager

__all__ = [
    "BidirectionalPTY",
    "ClaudeCommand",
    "CloseReason",
    "ExitStatus",
    "InputOverflow",
    "InvalidProjectId",
    "MigrationError",
    "PTYClosed",
    "PTYSession",
    "PTYSessionManager",
    "ReplayBuffer",
    "SessionLimitReached",
    "SessionStatus",
    "SessionStore",
    "Settings",
    "ShellCommand",
    "ShuttingDown",
    "SpawnError",
    "StoreLocked",
    "WxcodePtyError",
    "create_app",
    "get_session_manager",
]

__version__ = "0.1.0"
