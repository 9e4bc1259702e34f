"""The ``cyrus`` fixture: a real Cyrus IMAP 3.6 server, built by ``scripts/cyrus/build.sh``."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from .cyrus import CyrusServer, find_prefix


def cyrus_prefix() -> Path:
    """The Cyrus build to run; skips the test without one, unless ``JMAPWS_REQUIRE_CYRUS=1``,
    which makes it an error."""
    prefix = find_prefix()
    if prefix is None:
        if os.environ.get("JMAPWS_REQUIRE_CYRUS") == "1":
            pytest.fail(
                "no Cyrus build (JMAPWS_REQUIRE_CYRUS=1): run scripts/cyrus/build.sh",
                pytrace=False,
            )
        pytest.skip("no Cyrus build: run scripts/cyrus/build.sh")
    return prefix


@pytest.fixture(scope="session")
def cyrus() -> Iterator[CyrusServer]:
    """A running Cyrus server (user ``test``/``test``, admin ``admin``/``admin``) for the session.

    Skipped when no build is cached, unless ``JMAPWS_REQUIRE_CYRUS=1``, which makes it an error.
    It expunges at once (``expunge_mode: immediate``), so after a destroy Cyrus cannot
    calculate Email changes from an older state ("outdated sinceModseq").
    """
    server = CyrusServer(cyrus_prefix())
    server.start()
    try:
        yield server
    finally:
        server.close()
