"""wxcode-pty: long-running terminal programs in server-side PTYs, streamed to browsers.

Mount :func:`create_app` into an aiohttp application; see the README for the protocol.
"""

from .buffer import ReplayBuffer
from .claude import ClaudeCommand
from .commands import ShellCommand
from .manager import InvalidProjectId, PTYSessionManager, SessionLimitReached
from .pty import BidirectionalPTY, ExitStatus, InputOverflow, SpawnError
from .session import PTYSession
from .settings import Settings
from .store import SessionStore
from .web import create_app, get_session_manager

__all__ = [
    "BidirectionalPTY",
    "ClaudeCommand",
    "ExitStatus",
    "InputOverflow",
    "InvalidProjectId",
    "PTYSession",
    "PTYSessionManager",
    "ReplayBuffer",
    "SessionLimitReached",
    "SessionStore",
    "Settings",
    "ShellCommand",
    "SpawnError",
    "create_app",
    "get_session_manager",
]

__version__ = "0.1.0"
