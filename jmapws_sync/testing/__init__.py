"""The reference JMAP-over-WebSocket server that tests, the demo and benchmarks run against.

It needs the ``server`` extra (aiohttp)::

    from jmapws_sync.testing import ReferenceServer

    with ReferenceServer(users={"alice": "secret"}) as srv:
        ...  # srv.session_url, srv.ws_url, srv.api_url; knobs such as srv.halt()

See :class:`ReferenceServer` for the routes, the methods served (``Core/echo``, the
``Note`` and ``Notebook`` types of :data:`NOTES`, with ``/get``, ``/set``, ``/changes`` and
``/query``, and RFC 9404's ``Blob/upload`` and ``Blob/get``), the blob upload and download
endpoints, the event source (RFC 8620 §7.3) and the misbehaviour knobs.
"""

from __future__ import annotations

from jmapws_sync.testing.jmap import CORE, NOTES, WEBSOCKET, Limits, evaluate_pointer
from jmapws_sync.testing.server import CYRUS_QUIRKS, Handshake, ReferenceServer
from jmapws_sync.testing.store import NoteStore, account_id_for

__all__ = [
    "CORE",
    "CYRUS_QUIRKS",
    "NOTES",
    "WEBSOCKET",
    "Handshake",
    "Limits",
    "NoteStore",
    "ReferenceServer",
    "account_id_for",
    "evaluate_pointer",
]
