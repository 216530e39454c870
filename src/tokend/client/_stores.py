"""Where ``RefreshingAuth`` keeps the current token.

A ``TokenStore`` has two methods, ``load()`` and ``save(token)``; an ``AsyncTokenStore`` has
the same as coroutines (for a database driver that is async), usable with an
``httpx.AsyncClient``. ``save`` must be durable when it returns: the refresh token it
replaces is spent on the server, so a token that was handed out but not saved is a user
logged out at the next restart.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import threading
from pathlib import Path
from typing import Protocol, runtime_checkable

from tokend.client._models import TokenResponse

__all__ = ["AsyncTokenStore", "FileTokenStore", "MemoryTokenStore", "TokenStore"]


@runtime_checkable
class TokenStore(Protocol):
    def load(self) -> TokenResponse | None:
        """The current token, or None before the first save."""
        ...

    def save(self, token: TokenResponse) -> None:
        """Replace the current token, durably, before returning."""
        ...


class AsyncTokenStore(Protocol):
    async def load(self) -> TokenResponse | None: ...

    async def save(self, token: TokenResponse) -> None: ...


class MemoryTokenStore:
    """A token in memory: for a process that signs in at every start, and for tests."""

    def __init__(self, token: TokenResponse | None = None) -> None:
        self._token = token
        self._lock = threading.Lock()

    def load(self) -> TokenResponse | None:
        with self._lock:
            return self._token

    def save(self, token: TokenResponse) -> None:
        with self._lock:
            self._token = token

    def __repr__(self) -> str:
        return f"MemoryTokenStore({self._token!r})"


class FileTokenStore:
    """A token in a JSON file, readable by its owner only (0600).

    ``save`` writes a temporary file in the same directory (created 0600), fsyncs it,
    renames it over the old file with ``os.replace`` (atomic: a reader sees the old token or
    the new one, never half of one) and fsyncs the directory so the rename survives a crash.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path).expanduser()

    def load(self) -> TokenResponse | None:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return None
        return TokenResponse.from_dict(json.loads(data))

    def save(self, token: TokenResponse) -> None:
        data = json.dumps(token.to_dict(), separators=(",", ":")).encode()
        directory = self.path.parent
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=directory)
        try:
            with os.fdopen(fd, "wb") as fh:
                if hasattr(os, "fchmod"):
                    os.fchmod(fh.fileno(), 0o600)  # mkstemp's mode already; said out loud
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        _fsync_directory(directory)

    def __repr__(self) -> str:
        return f"FileTokenStore({str(self.path)!r})"


def _fsync_directory(directory: Path) -> None:
    if os.name != "posix":  # Windows cannot open a directory; its rename is what it is
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
