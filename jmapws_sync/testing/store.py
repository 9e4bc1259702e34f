"""The data behind the reference server: users' notes and notebooks, states and change logs.

A :class:`NoteStore` is deliberately separate from the server so that it can outlive one:
``ReferenceServer(store=old.store, port=old.port)`` restarts on the same port with the same
objects, the same state strings and the same change logs, which is what a reconnecting
client needs to resume with ``Foo/changes`` and ``pushState``.

Data types
----------
Two types live under the notes capability (:data:`DATA_TYPES`): ``Note`` (``id``,
``title``, ``body``; ids ``"n<int>"``) and ``Notebook`` (``id``, ``name``; ids
``"b<int>"``). Ids come from one store-wide counter, so they increase in creation order.

State model
-----------
One counter (``seq``) counts every single object change in the store, whatever its type.
Each (account, type) pair has its own state, the ``seq`` of its latest change, written
``"s<seq>"`` (``"s0"`` before the first change), its own change log (one entry per object
change, so ``Foo/changes`` with ``maxChanges`` can stop between any two changes and report
the intermediate state) and its own floor (the oldest state the log still answers, raised
by :meth:`NoteStore.compact_changes`). Since ``seq`` is store-wide, a state string names
one moment of the whole store. A ``pushState`` is the store-wide ``seq``, written
``"p<seq>"``. All of these are opaque to clients and increase monotonically.

Queries
-------
``Foo/query`` results are the type's live objects in creation order (no filter, no sort).
Each (account, type) keeps them in a :class:`_CreationOrder`, so a page costs
O(log n + page): the query state is the type's state string.

All methods are thread-safe (one lock); listeners registered with :meth:`NoteStore.subscribe`
are called under that lock, in commit order, and must not block or call back into the store.
"""

from __future__ import annotations

import bisect
import itertools
import logging
import threading
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from operator import itemgetter
from types import MappingProxyType
from typing import Any

__all__ = [
    "DATA_TYPES",
    "NOTE",
    "NOTEBOOK",
    "NOTEBOOK_PROPERTIES",
    "NOTE_PROPERTIES",
    "AnchorNotFound",
    "CannotCalculateChanges",
    "ChangeListener",
    "ChangesResult",
    "DataType",
    "NoteStore",
    "QueryResult",
    "SetResult",
    "StateMismatch",
    "account_id_for",
    "skewed_state",
]

logger = logging.getLogger(__name__)

NOTE = "Note"
NOTEBOOK = "Notebook"

#: The properties of a ``Note``; ``id`` is server-set and immutable.
NOTE_PROPERTIES: tuple[str, ...] = ("id", "title", "body")
#: The properties of a ``Notebook``; ``id`` is server-set and immutable.
NOTEBOOK_PROPERTIES: tuple[str, ...] = ("id", "name")


@dataclass(frozen=True)
class DataType:
    """One data type of the store: its name, its id prefix and its properties."""

    name: str
    id_prefix: str
    #: Every property, ``id`` first; all but ``id`` are writable strings (default ``""``).
    properties: tuple[str, ...]

    @property
    def writable(self) -> frozenset[str]:
        """The properties a ``/set`` may give."""
        return frozenset(self.properties[1:])


#: The data types served, by name.
DATA_TYPES: Mapping[str, DataType] = MappingProxyType(
    {
        NOTE: DataType(NOTE, "n", NOTE_PROPERTIES),
        NOTEBOOK: DataType(NOTEBOOK, "b", NOTEBOOK_PROPERTIES),
    }
)

#: ``listener(changed, push_state)``: ``changed`` maps account id -> {type: new state}
#: for the types that changed (``{"Note": ...}``, ``{"Notebook": ...}`` or both).
ChangeListener = Callable[[dict[str, dict[str, str]], str], None]

_CREATED, _UPDATED, _DESTROYED = "created", "updated", "destroyed"
_seq_of = itemgetter(0)


def account_id_for(user: str) -> str:
    """The id of ``user``'s one personal account (``"a-" + user``)."""
    return f"a-{user}"


def _state_string(seq: int) -> str:
    return f"s{seq}"


def skewed_state(state: str) -> str:
    """What a ``push_states_differ`` server pushes for ``state``: ``"s<n>"`` -> ``"x<n+7>"``.

    Different from every string ``/get`` and ``/changes`` give, yet changing with them.
    """
    seq = _parse_counter(state, "s")
    return f"x{seq + 7}" if seq is not None else f"x{state}"


def _parse_counter(text: object, prefix: str) -> int | None:
    """The integer in ``prefix + digits``, or ``None`` for anything else."""
    if not isinstance(text, str) or not text.startswith(prefix):
        return None
    digits = text[len(prefix) :]
    if not digits.isdigit() or not digits.isascii():
        return None
    return int(digits)


class _CreationOrder:
    """The live ids of one collection in creation order, indexed by position.

    Every id ever added gets the next slot (1, 2, 3...; never reused). A Fenwick tree over
    the slots counts the live ones, so an id's position is a prefix sum and the id at a
    position one descent of the tree, both O(log n); the live slots are also linked in
    order, so a page of k ids costs O(log n + k). Appending is amortised O(1): a new node
    sums its children, as many as the trailing zeros of its slot number.
    """

    __slots__ = ("_ids", "_last", "_live", "_next", "_prev", "_slots", "_tree")

    def __init__(self) -> None:
        self._ids: list[str] = [""]  # slot -> id; slot 0 is the head of the linked list
        self._slots: dict[str, int] = {}
        self._tree: list[int] = [0]  # 1-based: _tree[i] counts live slots in (i - lowbit, i]
        self._next: list[int] = [0]  # slot -> next live slot, 0 after the last one
        self._prev: list[int] = [0]
        self._last = 0
        self._live = 0

    def __len__(self) -> int:
        return self._live

    def append(self, obj_id: str) -> None:
        slot = len(self._ids)
        self._ids.append(obj_id)
        self._slots[obj_id] = slot
        tree = self._tree
        total, step, low = 1, 1, slot & -slot
        while step < low:
            total += tree[slot - step]
            step <<= 1
        tree.append(total)
        self._next.append(0)
        self._prev.append(self._last)
        self._next[self._last] = slot
        self._last = slot
        self._live += 1

    def remove(self, obj_id: str) -> None:
        slot = self._slots.pop(obj_id)
        before, after = self._prev[slot], self._next[slot]
        self._next[before] = after
        if after:
            self._prev[after] = before
        else:
            self._last = before
        tree = self._tree
        size = len(tree) - 1
        while slot <= size:
            tree[slot] -= 1
            slot += slot & -slot
        self._live -= 1

    def index(self, obj_id: str) -> int | None:
        """The zero-based position of ``obj_id``, or ``None`` if it is not live."""
        slot = self._slots.get(obj_id)
        if slot is None:
            return None
        tree = self._tree
        count, slot = 0, slot - 1
        while slot > 0:
            count += tree[slot]
            slot -= slot & -slot
        return count

    def page(self, start: int, limit: int | None) -> list[str]:
        """Up to ``limit`` (``None``: all) ids from position ``start`` (``>= 0``) on."""
        count = self._live - start
        if limit is not None:
            count = min(count, limit)
        if count <= 0:
            return []
        tree = self._tree
        size = len(tree) - 1
        slot, remaining, step = 0, start + 1, 1 << (size.bit_length() - 1)
        while step:
            probe = slot + step
            if probe <= size and tree[probe] < remaining:
                slot = probe
                remaining -= tree[probe]
            step >>= 1
        slot += 1  # the slot of the (start + 1)-th live id
        ids, nexts = self._ids, self._next
        out: list[str] = []
        for _ in range(count):
            out.append(ids[slot])
            slot = nexts[slot]
        return out


@dataclass
class _Collection:
    """The objects of one type in one account, with that type's state and change log."""

    objects: dict[str, dict[str, str]] = field(default_factory=dict)
    order: _CreationOrder = field(default_factory=_CreationOrder)
    seq: int = 0
    #: ``(seq, object id, kind)`` in increasing ``seq`` order.
    log: list[tuple[int, str, str]] = field(default_factory=list)
    #: The oldest ``sinceState`` seq that the log can still answer.
    floor: int = 0


@dataclass
class _Account:
    """One account: a collection per data type."""

    user: str
    collections: dict[str, _Collection] = field(
        default_factory=lambda: {name: _Collection() for name in DATA_TYPES}
    )


@dataclass
class SetResult:
    """The outcome of :meth:`NoteStore.set_objects`, in RFC 8620 §5.3 ``/set`` shape."""

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


@dataclass
class QueryResult:
    """The outcome of :meth:`NoteStore.query`, in RFC 8620 §5.5 ``/query`` shape."""

    query_state: str
    #: The zero-based index of ``ids[0]`` in the whole result list (after clamping).
    position: int
    ids: list[str]
    total: int


class StateMismatch(Exception):
    """``ifInState`` did not match the type's current state (RFC 8620 §5.3)."""


class CannotCalculateChanges(Exception):
    """The ``sinceState`` is unknown to this store or older than its log (RFC 8620 §5.2)."""


class AnchorNotFound(Exception):
    """The ``anchor`` of a ``/query`` is not in its results (RFC 8620 §5.5)."""


class NoteStore:
    """Accounts, objects, states and change logs of one reference server (or several).

    ``users`` pre-creates one account per user name; accounts of other users are created on
    first use (:meth:`ensure_account`), so a store can be handed to a server with more users.
    ``data_type`` arguments name a type of :data:`DATA_TYPES` (``KeyError`` otherwise).
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

    def state(self, account_id: str, data_type: str = NOTE) -> str:
        """The current state string of ``data_type`` (by default ``Note``) in ``account_id``."""
        with self._lock:
            return _state_string(self._collection(account_id, data_type).seq)

    def push_state(self) -> str:
        """The current store-wide ``pushState`` token."""
        with self._lock:
            return f"p{self._seq}"

    def objects(self, account_id: str, data_type: str) -> dict[str, dict[str, str]]:
        """A copy of every object of ``data_type`` in ``account_id``, by id, in creation order."""
        with self._lock:
            items = self._collection(account_id, data_type).objects.items()
            return {k: dict(v) for k, v in items}

    def notes(self, account_id: str) -> dict[str, dict[str, str]]:
        """A copy of every note of ``account_id``, by id."""
        return self.objects(account_id, NOTE)

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
    def get_objects(
        self,
        account_id: str,
        data_type: str,
        ids: list[str] | None,
        properties: list[str] | None,
    ) -> tuple[str, list[dict[str, str]], list[str]]:
        """``(state, list, notFound)`` for a ``Foo/get``; ``ids=None`` means all objects.

        ``properties`` (without ``id``, which is always given) must be the type's.
        """
        spec = DATA_TYPES[data_type]
        props = spec.properties if properties is None else ("id", *properties)
        with self._lock:
            collection = self._collection(account_id, data_type)
            objects = collection.objects
            wanted = list(objects) if ids is None else ids
            found: list[dict[str, str]] = []
            not_found: list[str] = []
            seen: set[str] = set()
            for obj_id in wanted:
                if obj_id in seen:
                    continue
                seen.add(obj_id)
                obj = objects.get(obj_id)
                if obj is None:
                    not_found.append(obj_id)
                else:
                    found.append({p: obj[p] for p in props})
            return _state_string(collection.seq), found, not_found

    def get_notes(
        self, account_id: str, ids: list[str] | None, properties: list[str] | None
    ) -> tuple[str, list[dict[str, str]], list[str]]:
        """``(state, list, notFound)`` for a ``Note/get``; ``ids=None`` means all notes."""
        return self.get_objects(account_id, NOTE, ids, properties)

    def changes(
        self,
        account_id: str,
        since_state: str,
        max_changes: int | None,
        data_type: str = NOTE,
    ) -> ChangesResult:
        """The ids of ``data_type`` changed since ``since_state`` (RFC 8620 §5.2).

        At most ``max_changes`` log entries are taken (so at most that many ids), with
        ``has_more_changes`` and the intermediate state when more are left. Raises
        :class:`CannotCalculateChanges` for a string that is not a state of this store, one
        ahead of the type's state or one older than its log (see :meth:`compact_changes`).
        """
        with self._lock:
            collection = self._collection(account_id, data_type)
            since = _parse_counter(since_state, "s")
            if since is None or since > collection.seq or since < collection.floor:
                raise CannotCalculateChanges(since_state)
            log = collection.log
            start = bisect.bisect_right(log, since, key=_seq_of)
            has_more = max_changes is not None and len(log) - start > max_changes
            if has_more and max_changes is not None:
                entries = log[start : start + max_changes]
                new_seq = entries[-1][0]
            else:
                entries = log[start:]
                new_seq = collection.seq
            # Fold per id (RFC 8620 §5.2): created-then-updated is "created"; created-then-
            # destroyed is left out; anything-then-destroyed is "destroyed".
            first: dict[str, str] = {}
            last: dict[str, str] = {}
            for _, obj_id, kind in entries:
                first.setdefault(obj_id, kind)
                last[obj_id] = kind
            created: list[str] = []
            updated: list[str] = []
            destroyed: list[str] = []
            for obj_id, kind in first.items():
                final = last[obj_id]
                if kind == _CREATED:
                    if final != _DESTROYED:
                        created.append(obj_id)
                elif final == _DESTROYED:
                    destroyed.append(obj_id)
                else:
                    updated.append(obj_id)
            return ChangesResult(
                old_state=since_state,
                new_state=_state_string(new_seq),
                has_more_changes=has_more,
                created=created,
                updated=updated,
                destroyed=destroyed,
            )

    def query(
        self,
        account_id: str,
        data_type: str,
        *,
        position: int = 0,
        anchor: str | None = None,
        anchor_offset: int = 0,
        limit: int | None = None,
    ) -> QueryResult:
        """A page of the ids of ``data_type``, in creation order (RFC 8620 §5.5).

        A negative ``position`` counts from the end (clamped to 0). With an ``anchor`` the
        ``position`` is ignored: the page starts ``anchor_offset`` after the anchor's index
        (clamped to 0), or :class:`AnchorNotFound` is raised. ``limit=None`` means no limit.
        O(log n + page).
        """
        if limit is not None and limit < 0:
            raise ValueError("limit must not be negative")
        with self._lock:
            collection = self._collection(account_id, data_type)
            order = collection.order
            total = len(order)
            if anchor is not None:
                index = order.index(anchor)
                if index is None:
                    raise AnchorNotFound(anchor)
                start = max(index + anchor_offset, 0)
            elif position < 0:
                start = max(total + position, 0)
            else:
                start = position
            return QueryResult(
                query_state=_state_string(collection.seq),
                position=start,
                ids=order.page(start, limit),
                total=total,
            )

    def changed_since(
        self,
        push_state: str | None,
        account_ids: Iterable[str],
        data_types: Collection[str] | None = None,
    ) -> tuple[dict[str, dict[str, str]], str]:
        """``(changed, current pushState)``: what changed since ``push_state``, by type.

        ``changed`` maps each account of ``account_ids`` with a type changed since the token
        to ``{type: state}`` for those types; ``data_types`` (``None``: all) narrows the
        types looked at. An unknown or missing token (another store's, or ``None``) answers
        every type of every account: the client then resynchronises with ``/changes``, which
        is always safe.
        """
        with self._lock:
            since = _parse_counter(push_state, "p")
            if since is not None and since > self._seq:
                since = None
            result: dict[str, dict[str, str]] = {}
            for account_id in account_ids:
                account = self._accounts.get(account_id)
                if account is None:
                    continue
                types = {
                    name: _state_string(collection.seq)
                    for name, collection in account.collections.items()
                    if (data_types is None or name in data_types)
                    and (since is None or collection.seq > since)
                }
                if types:
                    result[account_id] = types
            return result, f"p{self._seq}"

    def changed_since_push_state(
        self, push_state: str | None, account_ids: Iterable[str]
    ) -> tuple[dict[str, str], str]:
        """``(changed, current pushState)``: accounts whose notes changed, by Note state.

        :meth:`changed_since` for ``Note`` alone, flattened to ``{account: state}``.
        """
        changed, current = self.changed_since(push_state, account_ids, (NOTE,))
        return {account: types[NOTE] for account, types in changed.items()}, current

    # -- writing -------------------------------------------------------------------
    def set_objects(
        self,
        account_id: str,
        data_type: str,
        *,
        create: Mapping[str, Any] | None = None,
        update: Mapping[str, Any] | None = None,
        destroy: Iterable[str] | None = None,
        if_in_state: str | None = None,
        created_ids: Mapping[str, str] | None = None,
    ) -> SetResult:
        """Apply one ``Foo/set`` atomically (RFC 8620 §5.3); notify listeners once.

        ``created_ids`` resolves ``#creationId`` references in update keys and destroy ids;
        the new creation ids of this call are usable by later ids of the same call. Raises
        :class:`StateMismatch` when ``if_in_state`` is given and not the type's state.
        """
        spec = DATA_TYPES[data_type]
        writable = spec.writable
        with self._lock:
            collection = self._collection(account_id, data_type)
            objects = collection.objects
            old = _state_string(collection.seq)
            if if_in_state is not None and if_in_state != old:
                raise StateMismatch(if_in_state)
            result = SetResult(old_state=old, new_state=old)
            known_ids = dict(created_ids or {})
            for creation_id, obj in (create or {}).items():
                problem = _check(obj, writable, creating=True)
                if problem is not None:
                    result.not_created[creation_id] = problem
                    continue
                obj_id = self._create(collection, spec, obj)
                known_ids[creation_id] = obj_id
                result.created[creation_id] = {"id": obj_id}
            for key, patch in (update or {}).items():
                obj_id = _resolve(key, known_ids)
                current = objects.get(obj_id)
                if current is None:
                    result.not_updated[key] = {"type": "notFound"}
                    continue
                problem = _check(patch, writable, creating=False)
                if problem is not None:
                    result.not_updated[key] = problem
                    continue
                for prop in writable & patch.keys():
                    current[prop] = patch[prop]
                self._log(collection, obj_id, _UPDATED)
                result.updated[obj_id] = None
            for key in destroy or ():
                obj_id = _resolve(key, known_ids)
                if obj_id not in objects:
                    result.not_destroyed[key] = {"type": "notFound"}
                    continue
                del objects[obj_id]
                collection.order.remove(obj_id)
                self._log(collection, obj_id, _DESTROYED)
                result.destroyed.append(obj_id)
            result.new_state = _state_string(collection.seq)
            if result.new_state != old:
                self._notify({account_id: {data_type: result.new_state}})
            return result

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
        """Apply one ``Note/set``: :meth:`set_objects` for ``Note``."""
        return self.set_objects(
            account_id,
            NOTE,
            create=create,
            update=update,
            destroy=destroy,
            if_in_state=if_in_state,
            created_ids=created_ids,
        )

    def bulk_create(
        self, account_id: str, data_type: str, objects: Iterable[Mapping[str, str]]
    ) -> list[str]:
        """Create many objects in one commit, with one notification; return their ids.

        Each object maps writable properties to strings (missing ones are ``""``); each
        creation is its own change-log entry, as if by one ``/set`` per object. All or
        nothing: an invalid object raises ``ValueError`` before anything is created. For
        tests and benchmarks (100,000 notes take well under a second or two).
        """
        spec = DATA_TYPES[data_type]
        writable = spec.writable
        items = [dict(obj) for obj in objects]
        for index, obj in enumerate(items):
            problem = _check(obj, writable, creating=True)
            if problem is not None:
                raise ValueError(f"object {index}: {problem['description']}: {obj!r}")
        defaults = dict.fromkeys(spec.properties[1:], "")
        prefix = spec.id_prefix
        ids: list[str] = []
        with self._lock:
            collection = self._collection(account_id, data_type)
            objects_by_id, log, append = collection.objects, collection.log, collection.order.append
            seq, counter = self._seq, self._ids
            for obj in items:
                obj_id = f"{prefix}{next(counter)}"
                seq += 1
                objects_by_id[obj_id] = {"id": obj_id, **defaults, **obj}
                append(obj_id)
                log.append((seq, obj_id, _CREATED))
                ids.append(obj_id)
            if ids:
                self._seq = collection.seq = seq
                self._notify({account_id: {data_type: _state_string(seq)}})
        return ids

    def create_note(self, account_id: str, *, title: str = "", body: str = "") -> str:
        """Create a note as if by ``Note/set`` (listeners are told); return its id."""
        result = self.set_notes(account_id, create={"c": {"title": title, "body": body}})
        return str(result.created["c"]["id"])

    def update_note(
        self, account_id: str, note_id: str, *, title: str | None = None, body: str | None = None
    ) -> None:
        """Change a note as if by ``Note/set``; ``KeyError`` if it does not exist."""
        patch = {k: v for k, v in (("title", title), ("body", body)) if v is not None}
        self._update(account_id, NOTE, note_id, patch)

    def destroy_note(self, account_id: str, note_id: str) -> None:
        """Destroy a note as if by ``Note/set``; ``KeyError`` if it does not exist."""
        self._destroy(account_id, NOTE, note_id)

    def create_notebook(self, account_id: str, *, name: str = "") -> str:
        """Create a notebook as if by ``Notebook/set`` (listeners are told); return its id."""
        result = self.set_objects(account_id, NOTEBOOK, create={"c": {"name": name}})
        return str(result.created["c"]["id"])

    def update_notebook(
        self, account_id: str, notebook_id: str, *, name: str | None = None
    ) -> None:
        """Change a notebook as if by ``Notebook/set``; ``KeyError`` if it does not exist."""
        self._update(account_id, NOTEBOOK, notebook_id, {} if name is None else {"name": name})

    def destroy_notebook(self, account_id: str, notebook_id: str) -> None:
        """Destroy a notebook as if by ``Notebook/set``; ``KeyError`` if it does not exist."""
        self._destroy(account_id, NOTEBOOK, notebook_id)

    def compact_changes(self, account_id: str, data_type: str | None = None) -> None:
        """Forget the change log of ``data_type`` (``None``: every type) in ``account_id``.

        States older than the current one then get cannotCalculateChanges.
        """
        with self._lock:
            names = list(DATA_TYPES) if data_type is None else [data_type]
            for name in names:
                collection = self._collection(account_id, name)
                collection.log.clear()
                collection.floor = collection.seq

    # -- internals -----------------------------------------------------------------
    def _collection(self, account_id: str, data_type: str) -> _Collection:
        try:
            account = self._accounts[account_id]
        except KeyError:
            raise KeyError(f"no such account: {account_id}") from None
        try:
            return account.collections[data_type]
        except KeyError:
            raise KeyError(f"no such data type: {data_type}") from None

    def _create(self, collection: _Collection, spec: DataType, obj: Mapping[str, str]) -> str:
        obj_id = f"{spec.id_prefix}{next(self._ids)}"
        collection.objects[obj_id] = {
            "id": obj_id,
            **{p: obj.get(p, "") for p in spec.properties[1:]},
        }
        collection.order.append(obj_id)
        self._log(collection, obj_id, _CREATED)
        return obj_id

    def _update(self, account_id: str, data_type: str, obj_id: str, patch: dict[str, str]) -> None:
        result = self.set_objects(account_id, data_type, update={obj_id: patch})
        if obj_id in result.not_updated:
            raise KeyError(obj_id)

    def _destroy(self, account_id: str, data_type: str, obj_id: str) -> None:
        result = self.set_objects(account_id, data_type, destroy=[obj_id])
        if obj_id in result.not_destroyed:
            raise KeyError(obj_id)

    def _log(self, collection: _Collection, obj_id: str, kind: str) -> None:
        self._seq += 1
        collection.seq = self._seq
        collection.log.append((self._seq, obj_id, kind))

    def _notify(self, changed: dict[str, dict[str, str]]) -> None:
        push_state = f"p{self._seq}"
        for listener in list(self._listeners):
            try:
                listener(changed, push_state)
            except Exception:
                logger.exception("change listener %r failed", listener)


def _resolve(key: str, known_ids: Mapping[str, str]) -> str:
    """An object id, resolving ``#creationId`` (RFC 8620 §5.3); ``""`` (none) if unknown."""
    if key.startswith("#"):
        return known_ids.get(key[1:], "")
    return key


def _check(obj: object, writable: frozenset[str], *, creating: bool) -> dict[str, Any] | None:
    """A SetError for an invalid create or patch object, or ``None`` if it is fine."""
    if not isinstance(obj, dict):
        return {"type": "invalidProperties", "description": "not an object"}
    bad = sorted(str(k) for k, v in obj.items() if k not in writable or not isinstance(v, str))
    if bad:
        described = "server-set or unknown" if creating else "immutable, unknown or not a string"
        return {
            "type": "invalidProperties",
            "properties": bad,
            "description": f"properties {described}",
        }
    return None
