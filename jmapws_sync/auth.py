"""Credentials: HTTP Basic, Bearer tokens, and header callables for token refresh.

An *auth* is any callable that takes no argument and returns the HTTP headers to send
(usually just ``Authorization``). It is called again at every connect and every
discovery fetch, so a callable that returns a fresh token handles refresh::

    def fresh_token() -> dict[str, str]:
        return {"Authorization": f"Bearer {my_oauth_client.token()}"}

Secrets never appear in a ``repr``, a log line or an exception message.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Mapping

__all__ = ["Auth", "BasicAuth", "BearerAuth", "basic_header"]

#: What every ``auth=`` parameter accepts.
Auth = Callable[[], Mapping[str, str]]


def basic_header(username: str, password: str) -> str:
    """The ``Authorization`` (or ``Proxy-Authorization``) value for HTTP Basic, in UTF-8."""
    token = base64.b64encode(f"{username}:{password}".encode()).decode("ascii")
    return f"Basic {token}"


class BasicAuth:
    """HTTP Basic credentials (RFC 7617), sent as UTF-8."""

    __slots__ = ("_header", "username")

    def __init__(self, username: str, password: str) -> None:
        if ":" in username:
            raise ValueError("a Basic auth user name cannot contain ':'")
        self.username = username
        self._header = basic_header(username, password)

    def __call__(self) -> dict[str, str]:
        return {"Authorization": self._header}

    def __repr__(self) -> str:
        return f"BasicAuth(username={self.username!r}, password=<hidden>)"


class BearerAuth:
    """An OAuth 2.0 bearer token (RFC 6750).

    ``token`` is the token itself, or a callable returning the current token, called at
    every connect so that a refreshed token is picked up.
    """

    __slots__ = ("_token",)

    def __init__(self, token: str | Callable[[], str]) -> None:
        if isinstance(token, str):
            if not token:
                raise ValueError("empty bearer token")
            if token != token.strip() or any(c in token for c in "\r\n\0"):
                raise ValueError(
                    "the bearer token has whitespace around it or a line break in it"
                    " (read from a file? strip it); it is not shown here"
                )
        self._token = token

    def __call__(self) -> dict[str, str]:
        token = self._token if isinstance(self._token, str) else self._token()
        return {"Authorization": f"Bearer {token}"}

    def __repr__(self) -> str:
        return "BearerAuth(token=<hidden>)"
