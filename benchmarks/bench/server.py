"""The benchmark server: jmapws_sync's ReferenceServer in a process of its own.

:class:`jmapws_sync.testing.child.ServerProcess` runs it on 127.0.0.1 on a free port, so
that its threads and CPU time are another process's; this process is the client. Each
workload uses its own user, so that a push flood reaches one session. Only :func:`start`
imports ``jmapws_sync.testing`` (and with it aiohttp): the workload modules name
``ServerProcess`` for type checking only, so that the idle worker stays lean.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from jmapws_sync.testing.child import ServerProcess

#: Users (password "secret") and what they are for.
USERS = {
    "alice": "secret",  # round trips, concurrency, large answers, connect/close
    "flood": "secret",  # the push-drain workload: push_flood goes to this user only
    "idle": "secret",  # the 200 idle sessions
    "flooded": "secret",  # call latency during a push flood: Note changes for this user
    "syncer": "secret",  # first sync: 10,000 Notes
    "bigsync": "secret",  # the resync's peak RSS: 100,000 Notes
    "blobber": "secret",  # blob transfers: a 256 MiB upload and download, small uploads
    "push_ws": "secret",  # transports: WebSocket push (one Note changed, read at once)
    "push_es": "secret",  # transports: EventSource push
    "push_wsplain": "secret",  # transports: WebSocket push without compression (context)
    "caller": "secret",  # transports: calls over HTTP and over the WebSocket (10 Notes)
}
#: The account push_flood() floods: the "flood" user's.
FLOOD_ACCOUNT = "a-flood"
#: Big enough for a 16 MiB Core/echo (the request carries the payload too).
MAX_SIZE_REQUEST = 64 * 1024 * 1024
#: Large enough that the Session resource does not cap 16 threads calling at once.
MAX_CONCURRENT_REQUESTS = 64
MAX_CALLS_IN_REQUEST = 16
#: Room for the blob workload's 256 MiB file (the server's default is 50,000,000 bytes).
#: Its maxSizeBlobSet stays the default, 1 MiB: Blob/upload's largest size is 1 MiB.
MAX_SIZE_UPLOAD = 1024 * 1024 * 1024


def start() -> ServerProcess:
    """Start the server child with the benchmark users and limits."""
    # Imported here, not above: jmapws_sync.testing loads the whole server (aiohttp), and
    # the idle worker (a fresh run.py) must not carry it in its resident memory.
    from jmapws_sync.testing.child import ServerProcess

    return ServerProcess(
        users=USERS,
        max_size_request=MAX_SIZE_REQUEST,
        max_concurrent_requests=MAX_CONCURRENT_REQUESTS,
        max_calls_in_request=MAX_CALLS_IN_REQUEST,
        max_size_upload=MAX_SIZE_UPLOAD,
    )


#: The pushState of the last frame of a flood: how a client that merges knows the end.
FLOOD_END = "flood-end"


def flood(server: ServerProcess, n: int, account: str = FLOOD_ACCOUNT) -> None:
    """Start ``push_flood(n, account)`` in the child (the last frame's pushState is
    :data:`FLOOD_END`); returns at once."""
    server.call("push_flood", n, account, wait=False, last_push_state=FLOOD_END)
