"""Shared fixtures: a reference JMAP server on 127.0.0.1 port 0, and sessions to it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import jmapws_sync as jws
from jmapws_sync.testing import ReferenceServer

USERS = {"alice": "alice-secret-pw", "bob": "bob-secret-pw"}
ALICE = jws.BasicAuth("alice", USERS["alice"])


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
