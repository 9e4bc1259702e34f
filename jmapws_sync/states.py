"""Where a :class:`~jmapws_sync.ChangeFeed` keeps its states between runs.

A state store is two methods (:class:`StateStore`): ``load(account_id, data_type)`` gives
the state saved for that account and type, or None, and ``save(account_id, data_type,
state)`` replaces it. The feed saves a type's state once the application has taken the
changes up to it, so a process killed between receiving changes and handling them gets
them again (at least once, never lost). Any object with those two methods is a store: a
table of the application's own database, saved in the transaction that applies the
changes, is the strongest of all.

:class:`MemoryStateStore` (the default) keeps them for the life of the process;
:class:`FileStateStore` in a JSON file, replaced atomically at each save.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import threading
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from .errors import SyncError

__all__ = ["FileStateStore", "MemoryStateStore", "StateStore"]

_FORMAT = 1  # the "version" member of a state file


@runtime_checkable
class StateStore(Protocol):
    """What a :class:`~jmapws_sync.ChangeFeed` needs to persist its states."""

    def load(self, account_id: str, data_type: str) -> str | None:
        """The state saved for ``data_type`` in ``account_id``, or None."""

    def save(self, account_id: str, data_type: str, state: str) -> None:
        """Replace the state saved for ``data_type`` in ``account_id``; durable on return."""


class MemoryStateStore:
    """States in a dict, for the life of the process; safe from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._states: dict[tuple[str, str], str] = {}

    def load(self, account_id: str, data_type: str) -> str | None:
        """The state saved for ``data_type`` in ``account_id``, or None."""
        with self._lock:
            return self._states.get((account_id, data_type))

    def save(self, account_id: str, data_type: str, state: str) -> None:
        """Replace the state saved for ``data_type`` in ``account_id``."""
        with self._lock:
            self._states[(account_id, data_type)] = state

    def __repr__(self) -> str:
        return f"<MemoryStateStore {len(self._states)} states>"


class FileStateStore:
    """States in a JSON file, written atomically: a crash leaves the old file or the new.

    Each save writes the whole file under a temporary name in the same directory, flushes
    it to disk (fsync), renames it over the old one and flushes the directory, so a state
    is on disk when :meth:`save` returns. A file that is missing means no states yet; one
    that cannot be read, or is not a state file, is a :class:`~jmapws_sync.SyncError` at
    the first :meth:`load` (never silently a fresh start, which would resync everything).
    Safe from any thread of one process; two processes must not share a file.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._states: dict[str, dict[str, str]] | None = None  # read at the first use

    def load(self, account_id: str, data_type: str) -> str | None:
        """The state saved for ``data_type`` in ``account_id``, or None."""
        with self._lock:
            return self._read().get(account_id, {}).get(data_type)

    def save(self, account_id: str, data_type: str, state: str) -> None:
        """Replace the state saved for ``data_type`` in ``account_id``, durably."""
        with self._lock:
            states = self._read()
            if states.get(account_id, {}).get(data_type) == state:
                return
            states.setdefault(account_id, {})[data_type] = state
            self._write(states)

    def _read(self) -> dict[str, dict[str, str]]:
        if self._states is None:
            try:
                text = self.path.read_text(encoding="utf-8")
            except FileNotFoundError:
                self._states = {}
            except (OSError, UnicodeDecodeError) as exc:
                raise SyncError(f"cannot read the state file {self.path}: {exc}") from exc
            else:
                self._states = _parse(text, self.path)
        return self._states

    def _write(self, states: dict[str, dict[str, str]]) -> None:
        data = json.dumps({"version": _FORMAT, "states": states}, indent=1, sort_keys=True)
        directory = self.path.parent
        try:
            fd, temporary = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=directory)
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as file:
                    file.write(data + "\n")
                    file.flush()
                    os.fsync(file.fileno())
                os.replace(temporary, self.path)
            except BaseException:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(temporary)
                raise
            _fsync_directory(directory)
        except OSError as exc:
            raise SyncError(f"cannot write the state file {self.path}: {exc}") from exc

    def __repr__(self) -> str:
        return f"<FileStateStore {str(self.path)!r}>"


def _parse(text: str, path: Path) -> dict[str, dict[str, str]]:
    """The states of a state file; SyncError for anything else."""
    try:
        document: Any = json.loads(text)
    except ValueError as exc:
        raise SyncError(f"{path} is not a state file (not JSON)") from exc
    states = document.get("states") if isinstance(document, dict) else None
    if (
        not isinstance(document, dict)
        or document.get("version") != _FORMAT
        or not isinstance(states, dict)
        or not all(
            isinstance(types, dict) and all(isinstance(v, str) for v in types.values())
            for types in states.values()
        )
    ):
        raise SyncError(f"{path} is not a state file of version {_FORMAT}")
    return {account: dict(types) for account, types in states.items()}


def _fsync_directory(directory: Path) -> None:
    """Make a rename in ``directory`` durable (where the platform can)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # Windows cannot open a directory; its rename is durable enough
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
