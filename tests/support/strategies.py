"""Hypothesis strategies shared by the fuzz tests: JSON of every shape, and wire bytes."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import strategies as st

import jmapws_sync as jws

from .rawws import server_frame as frame

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=12,
)
json_objects = st.dictionaries(st.text(max_size=10), json_values, max_size=6)
ids = st.text(max_size=12)
arguments = st.dictionaries(st.text(max_size=10), json_values, max_size=4)
invocations = st.builds(jws.Invocation, st.text(max_size=16), arguments, ids)
string_maps = st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=3)

# Bodies that look like the real thing: the right member names, values of any shape, and
# often the right shapes, so the structuring code meets both near-misses and hits.
wire_invocation = st.one_of(
    st.tuples(st.text(max_size=8), arguments, ids).map(list),
    json_values,
)
plausible_members: dict[str, st.SearchStrategy[Any]] = {
    "methodResponses": st.lists(wire_invocation, max_size=3) | json_values,
    "sessionState": st.text(max_size=8) | json_values,
    "createdIds": string_maps | json_values,
    "requestId": st.text(max_size=8) | st.integers() | json_values,
    "type": st.text(max_size=30) | json_values,
    "status": st.integers() | json_values,
    "title": st.text(max_size=8) | json_values,
    "detail": st.text(max_size=8) | json_values,
    "limit": st.text(max_size=8) | json_values,
    "changed": st.dictionaries(st.text(max_size=5), string_maps, max_size=3) | json_values,
    "pushState": st.text(max_size=8) | json_values,
}


def response_body(n: int) -> dict[str, Any]:
    """A valid Response object."""
    return {"@type": "Response", "methodResponses": [], "sessionState": "s", "requestId": n}


OPCODES = [0x0, 0x1, 0x2, 0x8, 0x9, 0xA, 0x3, 0xB, 0xF]


@st.composite
def wire_frames(draw: st.DrawFn) -> bytes:
    """One frame with a random header (sometimes lying about its length) and payload."""
    payload = draw(
        st.binary(max_size=200)
        | st.dictionaries(
            st.sampled_from([*plausible_members, "@type"]), json_scalars, max_size=4
        ).map(lambda o: json.dumps(o).encode())
        | st.builds(lambda n: json.dumps(response_body(n)).encode(), st.integers())
        | st.integers(1000, 4999).map(lambda code: code.to_bytes(2, "big"))
    )
    opcode = draw(st.sampled_from(OPCODES) | st.sampled_from([0x1, 0x1, 0x1, 0x9]))
    fin = draw(st.booleans() | st.just(True))
    rsv = draw(st.just(0) | st.integers(0, 7))
    mask = draw(st.just(False) | st.booleans())
    length = draw(st.none() | st.none() | st.integers(0, 2**64 - 1) | st.integers(0, 300))
    return frame(opcode, payload, fin=fin, rsv=rsv, length=length, mask=mask)


byte_streams = st.one_of(
    st.binary(max_size=400),
    st.lists(wire_frames(), max_size=8).map(b"".join),
    st.tuples(st.lists(wire_frames(), max_size=8).map(b"".join), st.integers(0, 3000)).map(
        lambda t: t[0][: t[1]]
    ),
)
