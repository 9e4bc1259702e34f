"""Keep a local copy in sync: a :class:`ChangeFeed` over ``/changes``, ``/get`` and ``/query``.

The loop every application that keeps JMAP data writes (RFC 8620 §5.2), once and right:
remember each type's state; from it, ``Foo/changes`` and, in the same request through
result references (§3.7), ``Foo/get`` of what was created and of what was updated;
follow ``hasMoreChanges``; and start over with a full resync when the server cannot
calculate the changes. It sits above the sessions' public API (``call``, ``changes``,
``events``) and knows nothing of the connection below.

What real servers taught it:

* A resync pages through ``Foo/query`` and fetches each page with ``Foo/get`` in the same
  request, since Cyrus refuses ``Email/get`` with ``ids: null`` ("ids must be specified")
  and a mailbox of 100,000 Emails must not be held at once. Pages after the first are
  counted from the last id received (``anchor``), and several pages in one request are
  trusted only while their ``queryState`` agrees, so an object that does not change is
  never skipped when others come and go meanwhile. The state of the first page's
  ``Foo/get`` is where ``/changes`` goes on from: what changed while paging comes again.
  Types without ``/query`` are fetched whole with ``ids: null``.
* ``cannotCalculateChanges`` (Cyrus, from a state it has forgotten) and ``hasMoreChanges``
  with ``oldState == newState`` (James) both mean "resync".
* A push only says "something changed": Cyrus pushes states that are not those of its
  ``/get`` (fixed in 3.13.5), and Stalwart ignores the ``pushState`` of a reconnect. So
  :meth:`ChangeFeed.follow` catches up after every StateChange that names one of its
  types with a state it does not have, and after every reconnect, whatever the server
  replayed.
* ``Mailbox/changes`` may say which properties changed (``updatedProperties``, RFC 8621
  §2.2: the counts); once a type's answers carry the member, updated objects are fetched
  with just those.

Delivery is at least once: a type's state advances only when the application has taken
a :class:`Delta`, that is when it asks for the next one or calls :meth:`ChangeFeed.commit`,
and is saved in the :class:`~jmapws_sync.states.StateStore` then. A process killed while
handling a Delta gets it again at its next start.
"""

from __future__ import annotations

import logging
from collections.abc import Generator, Iterable, Iterator, Mapping, Sequence
from typing import Any, Final

import attrs

from .errors import ConnectionLost, MethodError, SyncError
from .frames import CORE, Request, RequestBuilder, Response, StateChange
from .reconnect import ReconnectInfo, ReconnectingSession
from .resource import PUSH_DATA_TYPES, SessionResource
from .session import WsSession
from .states import MemoryStateStore, StateStore

__all__ = ["ChangeFeed", "Delta"]

log = logging.getLogger(__name__)

#: Objects per ``Foo/get`` (and per page of a resync) unless the server allows fewer.
DEFAULT_PAGE_SIZE: Final = 256
#: Pages of a resync asked for in one request, within ``maxCallsInRequest``.
PAGES_PER_REQUEST: Final = 4
#: RFC 8620 §2's suggested minimums, used when no Session resource is known.
_RFC_MIN_OBJECTS_IN_GET: Final = 500
_RFC_MIN_CALLS_IN_REQUEST: Final = 16
#: Resyncs in a row for one type before the feed gives up on a server that keeps
#: saying it cannot calculate the changes from the state it just gave.
_MAX_RESYNCS: Final = 3
#: Times one request is sent again after the connection was lost under it (a
#: ReconnectingSession reconnects meanwhile; these calls only read, so resending is safe).
_MAX_RESENDS: Final = 5

Session = WsSession | ReconnectingSession


@attrs.frozen
class Delta:
    """What changed in one data type of one account, from ``old_state`` to ``new_state``.

    ``created`` and ``updated`` map ids to the objects as the server has them now
    (``updated`` ones with only ``updated_properties`` and ``id`` when the server said
    which properties changed); ``destroyed`` lists ids to drop. ``resync`` is True for the
    pages of a full resync, where everything comes as ``created``: the last of them
    (``more`` False) means that what the application holds of this type and did not
    receive again since the resync began is gone. ``more`` is True when more Deltas of
    the same catch-up of this type follow.
    """

    data_type: str
    account_id: str
    old_state: str | None
    new_state: str
    created: Mapping[str, dict[str, Any]] = attrs.field(factory=dict, repr=False)
    updated: Mapping[str, dict[str, Any]] = attrs.field(factory=dict, repr=False)
    destroyed: tuple[str, ...] = attrs.field(default=(), repr=False)
    resync: bool = False
    more: bool = False
    updated_properties: tuple[str, ...] | None = None

    @property
    def empty(self) -> bool:
        """True when nothing was created, updated or destroyed."""
        return not (self.created or self.updated or self.destroyed)

    def to_json(self) -> dict[str, Any]:
        """The Delta as a JSON object (what ``jmapws-sync sync`` prints, one per line)."""
        return {
            "dataType": self.data_type,
            "accountId": self.account_id,
            "oldState": self.old_state,
            "newState": self.new_state,
            "created": dict(self.created),
            "updated": dict(self.updated),
            "destroyed": list(self.destroyed),
            "updatedProperties": (
                None if self.updated_properties is None else list(self.updated_properties)
            ),
            "resync": self.resync,
            "more": self.more,
        }


class _Resync(Exception):
    """Internal: the server cannot give the changes from this state; resync the type."""


@attrs.define
class _Cursor:
    """Where a resync by pages has got to."""

    anchor_ids: list[str] = attrs.field(factory=list)  # the last page's ids
    back: int = 0  # how far back in anchor_ids the anchor is (after anchorNotFound)
    restarts: int = 0


class ChangeFeed:
    """The changes of ``data_types`` in one account, as :class:`Delta` objects.

    ``session`` is a :class:`~jmapws_sync.WsSession` or a
    :class:`~jmapws_sync.ReconnectingSession`; ``data_types`` names the types, caught up in
    that order (``["Mailbox", "Email"]``: an Email's mailbox is known before the Email).
    ``account_id`` defaults to the primary account of the first type's capability;
    ``properties`` is a list for every type or a mapping from type to list (None: every
    property). ``store`` keeps the states (default: in memory; :class:`FileStateStore
    <jmapws_sync.FileStateStore>` in a file). ``max_changes`` bounds the ids of one
    ``/changes`` answer (never above the server's ``maxObjectsInGet``); ``page_size`` the
    objects of one page of a resync. ``using`` adds capabilities to every request, for
    types this library does not know the capability of. ``call_timeout`` bounds each
    request.

    Use it from one thread: the feed is the consumer of the session's StateChanges while
    :meth:`follow` runs. :attr:`states` may be read from any thread.
    """

    def __init__(
        self,
        session: Session,
        data_types: Sequence[str],
        *,
        account_id: str | None = None,
        properties: Sequence[str] | Mapping[str, Sequence[str] | None] | None = None,
        store: StateStore | None = None,
        max_changes: int | None = None,
        page_size: int | None = None,
        using: Iterable[str] = (),
        call_timeout: float | None = 60.0,
    ) -> None:
        if not isinstance(session, WsSession | ReconnectingSession):
            raise TypeError("session must be a WsSession or a ReconnectingSession")
        if isinstance(data_types, str):
            raise TypeError('data_types is a list of names, such as ["Mailbox", "Email"]')
        types = tuple(data_types)
        if not types or not all(isinstance(t, str) and t for t in types):
            raise ValueError("data_types must name at least one data type")
        if len(set(types)) != len(types):
            raise ValueError("data_types names a type twice")
        for name, value in (("max_changes", max_changes), ("page_size", page_size)):
            if value is not None and (
                not isinstance(value, int) or isinstance(value, bool) or value < 1
            ):
                raise ValueError(f"{name} must be None or a positive integer")
        if store is not None and not isinstance(store, StateStore):
            raise TypeError("store must have load(account_id, data_type) and save(...)")
        self._session = session
        self._types = types
        self._properties = _properties_by_type(types, properties)
        self._store: StateStore = store if store is not None else MemoryStateStore()
        self._max_changes = max_changes
        self._page_size = page_size
        self._extra_using = tuple(using)
        self._call_timeout = call_timeout
        self._account = account_id
        self._using: tuple[str, ...] = (CORE,)
        self._max_get = _RFC_MIN_OBJECTS_IN_GET
        self._max_calls = _RFC_MIN_CALLS_IN_REQUEST
        self._states: dict[str, str | None] = {}
        self._ready = False
        self._taken: Delta | None = None
        self._with_updated_properties: set[str] = set()

    # ------------------------------------------------------------------ public

    @property
    def data_types(self) -> tuple[str, ...]:
        """The data types, in the order they are caught up."""
        return self._types

    @property
    def account_id(self) -> str | None:
        """The account (None until the first catch-up when it was not given)."""
        return self._account

    @property
    def states(self) -> dict[str, str | None]:
        """``{data_type: state}`` up to what the application has taken (None: not synced)."""
        return {t: self._states.get(t) for t in self._types}

    def catch_up(self, timeout: float | None = None) -> Iterator[Delta]:
        """Bring every type from its state to now: an iterator of :class:`Delta` objects.

        Requests are made as the iterator is consumed, a page at a time, so a resync of
        any size holds one or two pages. Asking for the next Delta commits the one
        before; so does exhausting the iterator. ``timeout`` bounds each request
        (default: the feed's ``call_timeout``).

        Raises :class:`~jmapws_sync.SyncError` for a data type or an account the server
        does not know, :class:`~jmapws_sync.MethodError` for another method error, and
        what ``call()`` raises.
        """
        limit = self._call_timeout if timeout is None else timeout
        return self._deliver(self._catch_up(self._types, limit))

    def follow(self, timeout: float | None = None, *, enable_push: bool = True) -> Iterator[Delta]:
        """Catch up now, then after every change the server pushes and every reconnect.

        An endless iterator of :class:`Delta` objects (it ends when a WsSession's stream
        ends cleanly). ``enable_push`` asks the server to push this feed's types first
        (``session.enable_push(data_types)``; on a ReconnectingSession it stays asked on
        every connection). A StateChange that names one of the types in this account with
        a state the feed does not have starts a catch-up of those types; a reconnect (a
        :class:`ReconnectInfo` from :meth:`ReconnectingSession.events
        <jmapws_sync.ReconnectingSession.events>`) starts one of every type, so nothing
        made while disconnected is missed on a server that ignores ``pushState``.
        ``timeout`` bounds each wait for news (:class:`TimeoutError`); requests are
        bounded by ``call_timeout``. Commits as :meth:`catch_up` does.
        """
        return self._deliver(self._follow(timeout, enable_push))

    def commit(self) -> None:
        """Mark the last Delta handed out as handled now: its state is saved."""
        delta, self._taken = self._taken, None
        if delta is not None and not (delta.resync and delta.more):
            self._save(delta.data_type, delta.new_state)

    def __repr__(self) -> str:
        return f"<ChangeFeed {','.join(self._types)} account={self._account!r}>"

    # ------------------------------------------------------------------ delivery

    def _deliver(self, deltas: Iterator[Delta]) -> Iterator[Delta]:
        """Hand Deltas out; the one taken is committed when the next is asked for."""
        self._taken = None  # a new iteration starts from what was committed
        for delta in deltas:
            self._taken = delta
            yield delta
            self.commit()

    def _save(self, data_type: str, state: str) -> None:
        if self._states.get(data_type) == state:
            return
        assert self._account is not None
        self._store.save(self._account, data_type, state)
        self._states[data_type] = state

    # ------------------------------------------------------------------ following

    def _follow(self, timeout: float | None, enable_push: bool) -> Iterator[Delta]:
        self._prepare()
        session = self._session
        if enable_push:
            session.enable_push(self._types)
        if isinstance(session, ReconnectingSession):
            seen = session.reconnects
            events: Iterator[StateChange | ReconnectInfo] = session.events(timeout)
        else:
            seen = 0
            events = iter(session.changes(timeout))
        yield from self._catch_up(self._types, self._call_timeout)
        for event in events:
            types: Sequence[str]
            reconnects = session.reconnects if isinstance(session, ReconnectingSession) else 0
            if isinstance(event, ReconnectInfo) or reconnects != seen:
                seen = reconnects  # another consumer may have taken the reconnect itself
                log.info("catching up %s after a reconnect", ",".join(self._types))
                types = self._types
            else:
                named = event.changed.get(self._account or "", {})
                types = [t for t in self._types if t in named and named[t] != self._states.get(t)]
            if types:
                yield from self._catch_up(types, self._call_timeout)

    # ------------------------------------------------------------------ catching up

    def _catch_up(self, types: Sequence[str], timeout: float | None) -> Iterator[Delta]:
        self._prepare()
        # One request for the first round of every type that has a state; the types
        # after one that needs more rounds wait, so the order of types is kept.
        held: dict[str, Delta | _Resync] = {}
        known = [t for t in types if self._states.get(t) is not None]
        per_request = max(1, self._max_calls // 3)
        for start in range(0, len(known), per_request):
            chunk = known[start : start + per_request]
            held.update(self._changes_round(chunk, timeout))
        for data_type in types:
            yield from self._catch_up_type(data_type, held.pop(data_type, None), timeout)

    def _catch_up_type(
        self, data_type: str, first: Delta | _Resync | None, timeout: float | None
    ) -> Iterator[Delta]:
        resyncs = 0
        state = self._states.get(data_type)
        while True:
            if state is None:
                resyncs += 1
                if resyncs > _MAX_RESYNCS:
                    raise SyncError(
                        f"{data_type}: the server cannot calculate changes even from the"
                        f" state of a resync, {_MAX_RESYNCS} times in a row"
                    )
                state = yield from self._resync(data_type, timeout)
                first = None
            outcome = (
                first
                if first is not None
                else self._changes_round([data_type], timeout, {data_type: state})[data_type]
            )
            first = None
            if isinstance(outcome, _Resync):
                log.info("%s: %s; resyncing", data_type, outcome)
                state = None
                continue
            if outcome.empty and not outcome.more:
                self._save(data_type, outcome.new_state)  # nothing to hand out: no loss
                return
            if not outcome.empty:
                yield outcome
            state = outcome.new_state
            if not outcome.more:
                return

    def _changes_round(
        self,
        types: Sequence[str],
        timeout: float | None,
        states: Mapping[str, str | None] | None = None,
    ) -> dict[str, Delta | _Resync]:
        """One request: ``/changes`` and the ``/get`` of its ids, for each type."""
        account = self._account
        builder = RequestBuilder(self._using)
        limit = min(self._max_changes or self._max_get, self._max_get)
        calls = {}
        for data_type in types:
            since = (states or self._states)[data_type]
            changes = builder.call(
                f"{data_type}/changes",
                {"accountId": account, "sinceState": since, "maxChanges": limit},
            )
            props = self._properties.get(data_type)
            created = builder.call(
                f"{data_type}/get", self._get_args(data_type, changes.ref("/created"), props)
            )
            updated_props: Any = props
            if props is None and data_type in self._with_updated_properties:
                updated_props = changes.ref("/updatedProperties")
            updated = builder.call(
                f"{data_type}/get",
                self._get_args(data_type, changes.ref("/updated"), updated_props),
            )
            calls[data_type] = (since, changes.call_id, created.call_id, updated.call_id)
        response = self._call(builder.build(), timeout)
        out: dict[str, Delta | _Resync] = {}
        for data_type, (since, changes_id, created_id, updated_id) in calls.items():
            try:
                answer = response.get(changes_id)
            except MethodError as exc:
                if exc.type == "cannotCalculateChanges":
                    out[data_type] = _Resync(f"cannotCalculateChanges from {since}")
                    continue
                raise self._refusal(exc, f"{data_type}/changes") from exc
            out[data_type] = self._read_changes(
                data_type,
                since=since,
                answer=answer,
                response=response,
                created_id=created_id,
                updated_id=updated_id,
                timeout=timeout,
            )
        return out

    def _read_changes(
        self,
        data_type: str,
        *,
        since: str | None,
        answer: Mapping[str, Any],
        response: Response,
        created_id: str,
        updated_id: str,
        timeout: float | None,
    ) -> Delta | _Resync:
        name = f"{data_type}/changes"
        old = _string(answer, "oldState", name)
        new = _string(answer, "newState", name)
        more = answer.get("hasMoreChanges")
        if not isinstance(more, bool):
            raise SyncError(f"{name} answered without a boolean hasMoreChanges")
        if more and old == new:  # James: no progress possible from here
            return _Resync("hasMoreChanges with oldState == newState")
        created_ids = _ids(answer, "created", name)
        updated_ids = _ids(answer, "updated", name)
        destroyed = list(_ids(answer, "destroyed", name))
        changed_props = answer.get("updatedProperties")
        if "updatedProperties" in answer:
            self._with_updated_properties.add(data_type)
        props = self._properties.get(data_type)
        created, gone = self._objects(
            data_type, response, call_id=created_id, ids=created_ids, props=props, timeout=timeout
        )
        destroyed += gone
        chosen = props
        if props is None and isinstance(changed_props, list):
            chosen = [str(p) for p in changed_props]
        updated, gone = self._objects(
            data_type, response, call_id=updated_id, ids=updated_ids, props=chosen, timeout=timeout
        )
        destroyed += gone
        assert self._account is not None
        return Delta(
            data_type,
            self._account,
            old_state=since,
            new_state=new,
            created=created,
            updated=updated,
            destroyed=tuple(destroyed),
            more=more,
            updated_properties=(
                tuple(str(p) for p in changed_props) if isinstance(changed_props, list) else None
            ),
        )

    def _objects(
        self,
        data_type: str,
        response: Response,
        *,
        call_id: str,
        ids: Sequence[str],
        props: Sequence[str] | None,
        timeout: float | None,
    ) -> tuple[dict[str, dict[str, Any]], list[str]]:
        """The objects a ``/get`` of ``ids`` found, by id, and the ids it did not find
        (destroyed since the ``/changes``). A server that returned more ids than its own
        ``/get`` takes (requestTooLarge) gets them asked in pieces."""
        if not ids:
            return {}, []
        try:
            answer = response.get(call_id)
        except MethodError as exc:
            if exc.type != "requestTooLarge":
                raise self._refusal(exc, f"{data_type}/get") from exc
            return self._get_in_pieces(data_type, ids, props, timeout)
        return _found(answer, f"{data_type}/get", ids)

    def _get_in_pieces(
        self,
        data_type: str,
        ids: Sequence[str],
        props: Sequence[str] | None,
        timeout: float | None,
    ) -> tuple[dict[str, dict[str, Any]], list[str]]:
        found: dict[str, dict[str, Any]] = {}
        missing: list[str] = []
        size = self._max_get
        pieces = [list(ids[i : i + size]) for i in range(0, len(ids), size)]
        for start in range(0, len(pieces), self._max_calls):
            builder = RequestBuilder(self._using)
            handles = [
                (builder.call(f"{data_type}/get", self._get_args(data_type, piece, props)), piece)
                for piece in pieces[start : start + self._max_calls]
            ]
            response = self._call(builder.build(), timeout)
            for handle, piece in handles:
                try:
                    answer = response.get(handle.call_id)
                except MethodError as exc:
                    raise self._refusal(exc, f"{data_type}/get") from exc
                some, gone = _found(answer, f"{data_type}/get", piece)
                found.update(some)
                missing += gone
        return found, missing

    # ------------------------------------------------------------------ resync

    def _resync(self, data_type: str, timeout: float | None) -> Generator[Delta, None, str]:
        """Hand out every object of ``data_type`` in pages; return the state to go on from."""
        old = self._states.get(data_type)
        props = self._properties.get(data_type)
        size = min(self._page_size or DEFAULT_PAGE_SIZE, self._max_get)
        pages = max(1, min(PAGES_PER_REQUEST, self._max_calls // 2))
        cursor = _Cursor()
        start_state: str | None = None
        held: Delta | None = None
        position = 0  # the first request counts by position, the later ones by anchor
        while True:
            builder = RequestBuilder(self._using)
            calls = []
            for page in range(pages):
                query: dict[str, Any] = {"accountId": self._account, "limit": size}
                if cursor.anchor_ids:
                    query["anchor"] = cursor.anchor_ids[-1 - cursor.back]
                    query["anchorOffset"] = 1 + cursor.back + page * size
                else:
                    query["position"] = position + page * size
                q = builder.call(f"{data_type}/query", query)
                g = builder.call(
                    f"{data_type}/get", self._get_args(data_type, q.ref("/ids"), props)
                )
                calls.append((q.call_id, g.call_id))
            response = self._call(builder.build(), timeout)
            query_state: object = None
            done = False
            got_any = False
            for query_id, get_id in calls:
                try:
                    answer = response.get(query_id)
                except MethodError as exc:
                    if exc.type == "unknownMethod" and start_state is None and not got_any:
                        return (yield from self._fetch_all(data_type, old, timeout))
                    if exc.type == "anchorNotFound":
                        cursor.back += 1
                        if cursor.back >= len(cursor.anchor_ids):
                            cursor = self._restart(data_type, cursor)
                            position = 0
                        break
                    raise self._refusal(exc, f"{data_type}/query") from exc
                state = answer.get("queryState")
                if query_state is not None and state != query_state:
                    break  # the results changed between two pages: go on from the anchor
                query_state = state
                ids = _ids(answer, "ids", f"{data_type}/query")
                try:
                    got = response.get(get_id)
                except MethodError as exc:
                    raise self._refusal(exc, f"{data_type}/get") from exc
                if start_state is None:
                    start_state = _string(got, "state", f"{data_type}/get")
                cap = answer.get("limit")
                capped = isinstance(cap, int) and 0 < cap < size
                effective = cap if isinstance(cap, int) and capped else size
                if ids:
                    got_any = True
                    objects, _ = _found(got, f"{data_type}/get", ids)
                    page_delta = Delta(
                        data_type,
                        self._account or "",
                        old,
                        start_state,
                        created=objects,
                        resync=True,
                        more=True,
                    )
                    if held is not None:
                        yield held
                    held = page_delta
                    cursor.anchor_ids, cursor.back = list(ids), 0
                if len(ids) < effective:
                    done = True
                    break
                if capped:  # the next pages of this request were counted with our size
                    size = effective
                    break
            if done:
                assert start_state is not None
                last = (
                    held
                    if held is not None
                    else Delta(data_type, self._account or "", old, start_state, resync=True)
                )
                yield attrs.evolve(last, more=False)
                return start_state

    def _restart(self, data_type: str, cursor: _Cursor) -> _Cursor:
        """Every id of the last page is gone: start the pages again from the first."""
        if cursor.restarts >= _MAX_RESYNCS:
            raise SyncError(f"{data_type}: the results kept changing under the resync")
        log.info("%s: the last page's objects are all gone; paging again", data_type)
        return _Cursor(restarts=cursor.restarts + 1)

    def _fetch_all(
        self, data_type: str, old: str | None, timeout: float | None
    ) -> Generator[Delta, None, str]:
        """A type without ``/query``: ``Foo/get`` with ``ids: null``, in one answer."""
        builder = RequestBuilder(self._using)
        handle = builder.call(
            f"{data_type}/get", self._get_args(data_type, None, self._properties.get(data_type))
        )
        response = self._call(builder.build(), timeout)
        try:
            answer = response.get(handle.call_id)
        except MethodError as exc:
            raise self._refusal(exc, f"{data_type}/get") from exc
        state = _string(answer, "state", f"{data_type}/get")
        objects, _ = _found(answer, f"{data_type}/get", None)
        yield Delta(data_type, self._account or "", old, state, created=objects, resync=True)
        return state

    # ------------------------------------------------------------------ plumbing

    def _prepare(self) -> None:
        """At the first use: the Session resource's limits, the account, the states."""
        if self._ready:
            return
        session = self._session
        resource = session.session
        if resource is None and isinstance(session, ReconnectingSession):
            session.wait_connected(self._call_timeout)
            resource = session.session
        capabilities = self._capabilities(resource)
        if resource is not None:
            self._max_get = resource.core.max_objects_in_get
            self._max_calls = resource.core.max_calls_in_request
            if self._account is None:
                self._account = _default_account(resource, capabilities)
            if self._account not in resource.accounts:
                raise SyncError(f"account {self._account!r} is not one of this user's accounts")
        if self._account is None:
            raise SyncError("no Session resource is known: give the feed an account_id")
        self._using = tuple(dict.fromkeys((CORE, *capabilities, *self._extra_using)))
        for data_type in self._types:
            self._states[data_type] = self._store.load(self._account, data_type)
        self._ready = True

    def _capabilities(self, resource: SessionResource | None) -> list[str]:
        """The advertised capabilities that bring the feed's types, in the types' order."""
        if resource is None:
            return []
        advertised = set(resource.capabilities)
        found: dict[str, None] = {}
        for data_type in self._types:
            for capability, names in PUSH_DATA_TYPES.items():
                if data_type in names and capability in advertised:
                    found[capability] = None
        return list(found)

    def _call(self, request: Request, timeout: float | None) -> Response:
        """``call()``, sent again when a ReconnectingSession lost the connection under it."""
        for attempt in range(_MAX_RESENDS + 1):
            try:
                return self._session.call(request, timeout=timeout)
            except ConnectionLost:
                if not isinstance(self._session, ReconnectingSession) or attempt == _MAX_RESENDS:
                    raise
                log.info("connection lost during a sync request; sending it again")
        raise AssertionError("unreachable")

    def _get_args(self, data_type: str, ids: Any, props: Any) -> dict[str, Any]:
        args: dict[str, Any] = {"accountId": self._account, "ids": ids}
        if props is not None:
            args["properties"] = props
        return args

    def _refusal(self, exc: MethodError, method: str) -> Exception:
        """A clear error for a method error the feed cannot get past."""
        if exc.type in ("unknownMethod", "unknownCapability"):
            return SyncError(
                f"the server does not know {method} ({exc.type}): is"
                f" {method.split('/', maxsplit=1)[0]!r} a data type it has, with its"
                " capability in using?"
            )
        if exc.type == "accountNotFound":
            return SyncError(f"{method}: the server has no account {self._account!r}")
        return exc


def _properties_by_type(
    types: Sequence[str], properties: Sequence[str] | Mapping[str, Sequence[str] | None] | None
) -> dict[str, list[str] | None]:
    if properties is None:
        return {}
    if isinstance(properties, str):
        raise TypeError("properties is a list of names, or a mapping from type to list")
    if isinstance(properties, Mapping):
        unknown = sorted(set(properties) - set(types))
        if unknown:
            raise ValueError(f"properties names types the feed does not follow: {unknown}")
        return {t: None if p is None else _with_id(p) for t, p in properties.items()}
    return {t: _with_id(properties) for t in types}


def _with_id(props: Sequence[str]) -> list[str]:
    if isinstance(props, str) or not all(isinstance(p, str) for p in props):
        raise TypeError("properties is a list of names")
    return list(dict.fromkeys(("id", *props)))


def _default_account(resource: SessionResource, capabilities: Sequence[str]) -> str:
    for capability in capabilities:
        account = resource.primary_accounts.get(capability)
        if account is not None:
            return account
    try:
        return resource.primary_account()
    except LookupError as exc:
        raise SyncError("the server names no primary account: give the feed an account_id") from exc


def _string(answer: Mapping[str, Any], member: str, method: str) -> str:
    value = answer.get(member)
    if not isinstance(value, str):
        raise SyncError(f"{method} answered without a string {member}")
    return value


def _ids(answer: Mapping[str, Any], member: str, method: str) -> list[str]:
    value = answer.get(member)
    if value is None and member != "ids":
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise SyncError(f"{method} answered with a {member} that is not a list of ids")
    return value


def _found(
    answer: Mapping[str, Any], method: str, asked: Sequence[str] | None
) -> tuple[dict[str, dict[str, Any]], list[str]]:
    listed = answer.get("list")
    if not isinstance(listed, list):
        raise SyncError(f"{method} answered without a list")
    objects: dict[str, dict[str, Any]] = {}
    for obj in listed:
        if not isinstance(obj, dict) or not isinstance(obj.get("id"), str):
            raise SyncError(f"{method} answered with an object without an id")
        objects[obj["id"]] = obj
    if asked is None:
        return objects, []
    return objects, [i for i in asked if i not in objects]
