"""The reference server in a child process (jmapws_sync.testing.child), as benchmarks use it."""

from __future__ import annotations

import pytest

import jmapws_sync as jws
from jmapws_sync.testing.child import ServerProcess


def test_server_process_serves_and_runs_knobs_in_the_child() -> None:
    """A call and a push through a server in another process; knobs and errors come back."""
    with ServerProcess(users={"alice": "child-pw"}, timeout=20) as server:
        assert server.facts["pid"] == server.proc.pid
        auth = jws.BasicAuth("alice", "child-pw")
        with jws.connect(server.facts["base_url"], auth=auth, timeout=5) as ws:
            ws.enable_push()
            ws.call(jws.RequestBuilder().build(), timeout=5)
            server.call("change_note", "alice", title="from the parent")
            change = next(ws.changes(timeout=5))
        assert change.changed == {"a-alice": {"Note": server.call("store.state", "a-alice")}}
        assert server.cpu() > 0
        with pytest.raises(RuntimeError, match="AttributeError"):
            server.call("_loop")
        with pytest.raises(RuntimeError, match="TypeError"):
            server.call("change_note")
    assert server.proc.returncode == 0
