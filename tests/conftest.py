"""Shared fixtures: a reference JMAP server on 127.0.0.1 port 0, sessions to it, and a check
that no test leaves a library thread behind."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import jmapws_sync as jws
from jmapws_sync.testing import ReferenceServer

from .support.threads import library_threads, wait_gone

USERS = {"alice": "alice-secret-pw", "bob": "bob-secret-pw"}
ALICE = jws.BasicAuth("alice", USERS["alice"])


@pytest.fixture(autouse=True)
def _no_thread_left_behind() -> Iterator[None]:
    """Fail a test that leaves a ``jmapws-`` thread alive (5 s after its fixtures end)."""
    before = library_threads()
    yield
    left = wait_gone(library_threads() - before)
    assert not left, f"threads left behind: {sorted(t.name for t in left)}"


@pytest.fixture
def server() -> Iterator[ReferenceServer]:
    """A running reference server with users alice and bob."""
    with ReferenceServer(users=USERS, seed=1) as srv:
        yield srv


@pytest.fixture
def ws(server: ReferenceServer) -> Iterator[jws.WsSession]:
    """A session for alice, opened by discovery from the server's base URL."""
    with jws.connect(server.base_url, auth=ALICE, timeout=5) as session:
        yield session
