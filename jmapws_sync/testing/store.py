"""The data behind the reference server: users' notes, states and the change log.

A :class:`NoteStore` is deliberately separate from the server so that it can outlive one:
``ReferenceServer(store=old.store, port=old.port)`` restarts on the same port with the same
notes, the same state strings and the same change log, which is what a reconnecting client
needs to resume with ``Note/changes`` and ``pushState``.

State model
-----------
One counter (``seq``) counts every single object change in the store. An account's state is
the ``seq`` of its latest change, written ``"s<seq>"``; a ``pushState`` is the store-wide
``seq``, written ``"p<seq>"``. Both are opaque to clients and increase monotonically. The
change log keeps one entry per object change, so ``Note/changes`` with ``maxChanges`` can stop
between any two changes and report the intermediate state.

All methods are thread-safe (one lock); listeners registered with :meth:`NoteStore.subscribe`
are called under that lock, in commit order, and must not block or call back into the store.
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "NOTE_PROPERTIES",
    "ChangeListener",
    "ChangesResult",
    "NoteStore",
    "SetResult",
    "account_id_for",
]

logger = logging.getLogger(__name__)

#: The properties of a ``Note``; ``id`` is server-set and immutable.
NOTE_PROPERTIES: tuple[str, ...] = ("id", "title", "body")
_WRITABLE = frozenset({"title", "body"})

#: ``listener(changed, push_state)``: ``changed`` maps account id -> {"Note": new state}.
ChangeListener = Callable[[dict[str, dict[str, str]], str], None]

_CREATED, _UPDATED, _DESTROYED = "created", "updated", "destroyed"


def account_id_for(user: str) -> str:
    """The id of ``user``'s one personal account (``"a-" + user``)."""
    return f"a-{user}"


def _state_string(seq: int) -> str:
    return f"s{seq}"


def _parse_counter(text: object, prefix: str) -> int | None:
    """The integer in ``prefix + digits``, or ``None`` for anything else."""
    if not isinstance(text, str) or not text.startswith(prefix):
        return None
    digits = text[len(prefix) :]
    if not digits.isdigit() or not digits.isascii():
        return None
    return int(digits)


@dataclass
class _Account:
    """One account: its notes, its latest change and its part of the change log."""

    user: str
    notes: dict[str, dict[str, str]] = field(default_factory=dict)
    seq: int = 0
    #: ``(seq, note id, kind)`` in increasing ``seq`` order.
    log: list[tuple[int, str, str]] = field(default_factory=list)
    #: The oldest ``sinceState`` seq that the log can still answer.
    floor: int = 0


@dataclass
class SetResult:
    """The outcome of :meth:`NoteStore.set_notes`, in RFC 8620 §5.3 ``/set`` shape."""

    old_state: str
    new_state: str
    created: dict[str, dict[str, Any]] = field(default_factory=dict)
    updated: dict[str, dict[str, Any] | None] = field(default_factory=dict)
    destroyed: list[str] = field(default_factory=list)
    not_created: dict[str, dict[str, Any]] = field(default_factory=dict)
    not_updated: dict[str, dict[str, Any]] = field(default_factory=dict)
    not_destroyed: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass
class ChangesResult:
    """The outcome of :meth:`NoteStore.changes`, in RFC 8620 §5.2 ``/changes`` shape."""

    old_state: str
    new_state: str
    has_more_changes: bool
    created: list[str]
    updated: list[str]
    destroyed: list[str]


class StateMismatch(Exception):
    """``ifInState`` did not match the account's current state (RFC 8620 §5.3)."""


class CannotCalculateChanges(Exception):
    """The ``sinceState`` is unknown to this store or older than its log (RFC 8620 §5.2)."""


class NoteStore:
    """Accounts, notes, states and the change log of one reference server (or several).

    ``users`` pre-creates one account per user name; accounts of other users are created on
    first use (:meth:`ensure_account`), so a store can be handed to a server with more users.
    """

    def __init__(self, users: Iterable[str] = ()) -> None:
        self._lock = threading.Lock()
        self._accounts: dict[str, _Account] = {}
        self._seq = 0
        self._ids = itertools.count(1)
        self._listeners: list[ChangeListener] = []
        for user in users:
            self.ensure_account(user)

    # -- accounts ------------------------------------------------------------------
    def ensure_account(self, user: str) -> str:
        """Create ``user``'s account if needed; return its id."""
        account_id = account_id_for(user)
        with self._lock:
            if account_id not in self._accounts:
                self._accounts[account_id] = _Account(user=user)
        return account_id

    def has_account(self, account_id: str) -> bool:
        """Whether ``account_id`` exists."""
        with self._lock:
            return account_id in self._accounts

    def state(self, account_id: str) -> str:
        """The current ``Note`` state string of ``account_id``."""
        with self._lock:
            return _state_string(self._account(account_id).seq)

    def push_state(self) -> str:
        """The current store-wide ``pushState`` token."""
        with self._lock:
            return f"p{self._seq}"

    def notes(self, account_id: str) -> dict[str, dict[str, str]]:
        """A copy of every note of ``account_id``, by id."""
        with self._lock:
            return {k: dict(v) for k, v in self._account(account_id).notes.items()}

    # -- listeners -----------------------------------------------------------------
    def subscribe(self, listener: ChangeListener) -> Callable[[], None]:
        """Call ``listener(changed, push_state)`` after every commit; return an unsubscriber.

        The listener runs under the store lock, in commit order, in whatever thread made the
        change: it must only hand the news over (``loop.call_soon_threadsafe``), never block.
        """
        with self._lock:
            self._listeners.append(listener)

        def unsubscribe() -> None:
            with self._lock:
                if listener in self._listeners:
                    self._listeners.remove(listener)

        return unsubscribe

    # -- reading -------------------------------------------------------------------
    def get_notes(
        self, account_id: str, ids: list[str] | None, properties: list[str] | None
    ) -> tuple[str, list[dict[str, str]], list[str]]:
        """``(state, list, notFound)`` for a ``Note/get``; ``ids=None`` means all notes."""
        props = NOTE_PROPERTIES if properties is None else ("id", *properties)
        with self._lock:
            account = self._account(account_id)
            wanted = list(account.notes) if ids is None else ids
            found: list[dict[str, str]] = []
            not_found: list[str] = []
            seen: set[str] = set()
            for note_id in wanted:
                if note_id in seen:
                    continue
                seen.add(note_id)
                note = account.notes.get(note_id)
                if note is None:
                    not_found.append(note_id)
                else:
                    found.append({p: note[p] for p in props})
            return _state_string(account.seq), found, not_found

    def changes(self, account_id: str, since_state: str, max_changes: int | None) -> ChangesResult:
        """The ids changed in ``account_id`` since ``since_state`` (RFC 8620 §5.2).

        Raises :class:`CannotCalculateChanges` for a state this store never issued for the
        account or one older than the log (see :meth:`compact_changes`).
        """
        with self._lock:
            account = self._account(account_id)
            since = _parse_counter(since_state, "s")
            if since is None or since > account.seq or since < account.floor:
                raise CannotCalculateChanges(since_state)
            entries = [e for e in account.log if e[0] > since]
            has_more = max_changes is not None and len(entries) > max_changes
            if has_more and max_changes is not None:
                entries = entries[:max_changes]
            new_seq = entries[-1][0] if entries else since
            if not has_more:
                new_seq = account.seq
            # Fold per id (RFC 8620 §5.2): created-then-updated is "created"; created-then-
            # destroyed is left out; anything-then-destroyed is "destroyed".
            first: dict[str, str] = {}
            last: dict[str, str] = {}
            for _, note_id, kind in entries:
                first.setdefault(note_id, kind)
                last[note_id] = kind
            created: list[str] = []
            updated: list[str] = []
            destroyed: list[str] = []
            for note_id, kind in first.items():
                final = last[note_id]
                if kind == _CREATED:
                    if final != _DESTROYED:
                        created.append(note_id)
                elif final == _DESTROYED:
                    destroyed.append(note_id)
                else:
                    updated.append(note_id)
            return ChangesResult(
                old_state=since_state,
                new_state=_state_string(new_seq),
                has_more_changes=has_more,
                created=created,
                updated=updated,
                destroyed=destroyed,
            )

    def changed_since_push_state(
        self, push_state: str | None, account_ids: Iterable[str]
    ) -> tuple[dict[str, str], str]:
        """``(changed, current pushState)``: accounts changed since ``push_state``, by state.

        Only accounts in ``account_ids`` are considered. An unknown or missing token (another
        store's, or ``None``) answers every account: the client then resynchronises with
        ``/changes``, which is always safe.
        """
        with self._lock:
            since = _parse_counter(push_state, "p")
            if since is not None and since > self._seq:
                since = None
            result: dict[str, str] = {}
            for account_id in account_ids:
                account = self._accounts.get(account_id)
                if account is None:
                    continue
                if since is None or account.seq > since:
                    result[account_id] = _state_string(account.seq)
            return result, f"p{self._seq}"

    # -- writing -------------------------------------------------------------------
    def set_notes(
        self,
        account_id: str,
        *,
        create: Mapping[str, Any] | None = None,
        update: Mapping[str, Any] | None = None,
        destroy: Iterable[str] | None = None,
        if_in_state: str | None = None,
        created_ids: Mapping[str, str] | None = None,
    ) -> SetResult:
        """Apply one ``Note/set`` atomically (RFC 8620 §5.3); notify listeners once.

        ``created_ids`` resolves ``#creationId`` references in update keys and destroy ids;
        the new creation ids of this call are usable by later ids of the same call. Raises
        :class:`StateMismatch` when ``if_in_state`` is given and stale.
        """
        with self._lock:
            account = self._account(account_id)
            old = _state_string(account.seq)
            if if_in_state is not None and if_in_state != old:
                raise StateMismatch(if_in_state)
            result = SetResult(old_state=old, new_state=old)
            known_ids = dict(created_ids or {})
            for creation_id, obj in (create or {}).items():
                problem = _check_note(obj, creating=True)
                if problem is not None:
                    result.not_created[creation_id] = problem
                    continue
                note_id = f"n{next(self._ids)}"
                account.notes[note_id] = {
                    "id": note_id,
                    "title": obj.get("title", ""),
                    "body": obj.get("body", ""),
                }
                self._log(account, note_id, _CREATED)
                known_ids[creation_id] = note_id
                result.created[creation_id] = {"id": note_id}
            for key, patch in (update or {}).items():
                note_id = _resolve(key, known_ids)
                note = account.notes.get(note_id)
                if note is None:
                    result.not_updated[key] = {"type": "notFound"}
                    continue
                problem = _check_note(patch, creating=False)
                if problem is not None:
                    result.not_updated[key] = problem
                    continue
                for prop in _WRITABLE & patch.keys():
                    note[prop] = patch[prop]
                self._log(account, note_id, _UPDATED)
                result.updated[note_id] = None
            for key in destroy or ():
                note_id = _resolve(key, known_ids)
                if note_id not in account.notes:
                    result.not_destroyed[key] = {"type": "notFound"}
                    continue
                del account.notes[note_id]
                self._log(account, note_id, _DESTROYED)
                result.destroyed.append(note_id)
            result.new_state = _state_string(account.seq)
            if result.new_state != old:
                self._notify({account_id: result.new_state})
            return result

    def create_note(self, account_id: str, *, title: str = "", body: str = "") -> str:
        """Create a note as if by ``Note/set`` (listeners are told); return its id."""
        result = self.set_notes(account_id, create={"c": {"title": title, "body": body}})
        return str(result.created["c"]["id"])

    def update_note(
        self, account_id: str, note_id: str, *, title: str | None = None, body: str | None = None
    ) -> None:
        """Change a note as if by ``Note/set``; ``KeyError`` if it does not exist."""
        patch = {k: v for k, v in (("title", title), ("body", body)) if v is not None}
        result = self.set_notes(account_id, update={note_id: patch})
        if note_id in result.not_updated:
            raise KeyError(note_id)

    def destroy_note(self, account_id: str, note_id: str) -> None:
        """Destroy a note as if by ``Note/set``; ``KeyError`` if it does not exist."""
        result = self.set_notes(account_id, destroy=[note_id])
        if note_id in result.not_destroyed:
            raise KeyError(note_id)

    def compact_changes(self, account_id: str) -> None:
        """Forget the change log of ``account_id``: older states now get cannotCalculateChanges."""
        with self._lock:
            account = self._account(account_id)
            account.log.clear()
            account.floor = account.seq

    # -- internals -----------------------------------------------------------------
    def _account(self, account_id: str) -> _Account:
        try:
            return self._accounts[account_id]
        except KeyError:
            raise KeyError(f"no such account: {account_id}") from None

    def _log(self, account: _Account, note_id: str, kind: str) -> None:
        self._seq += 1
        account.seq = self._seq
        account.log.append((self._seq, note_id, kind))

    def _notify(self, states: dict[str, str]) -> None:
        changed = {account_id: {"Note": state} for account_id, state in states.items()}
        push_state = f"p{self._seq}"
        for listener in list(self._listeners):
            try:
                listener(changed, push_state)
            except Exception:
                logger.exception("change listener %r failed", listener)


def _resolve(key: str, known_ids: Mapping[str, str]) -> str:
    """A note id, resolving ``#creationId`` (RFC 8620 §5.3); ``""`` (no note) if unknown."""
    if key.startswith("#"):
        return known_ids.get(key[1:], "")
    return key


def _check_note(obj: object, *, creating: bool) -> dict[str, Any] | None:
    """A SetError for an invalid create or patch object, or ``None`` if it is fine."""
    if not isinstance(obj, dict):
        return {"type": "invalidProperties", "description": "not an object"}
    bad = sorted(str(k) for k, v in obj.items() if k not in _WRITABLE or not isinstance(v, str))
    if bad:
        described = "server-set or unknown" if creating else "immutable, unknown or not a string"
        return {
            "type": "invalidProperties",
            "properties": bad,
            "description": f"properties {described}",
        }
    return None
