"""A fake ``TokenCredential``: no Azure AD, and a name the simulator's access control can deny.

The token is ``sim.<principal>``; the simulator reads it from the Authorization header.
"""

from __future__ import annotations

from typing import Any, NamedTuple


class _Token(NamedTuple):
    token: str
    expires_on: int


class _TokenInfo(NamedTuple):
    token: str
    expires_on: int
    token_type: str = "Bearer"
    refresh_on: int | None = None


class SimulatedCredential:
    def __init__(self, principal: str = "deployctl-user", *, expires_on: int = 4_102_444_800) -> None:
        self.principal = principal
        self._expires = expires_on

    def get_token(self, *scopes: str, **kwargs: Any) -> _Token:
        return _Token(f"sim.{self.principal}", self._expires)

    def get_token_info(self, *scopes: str, options: Any = None) -> _TokenInfo:
        return _TokenInfo(f"sim.{self.principal}", self._expires)

    def close(self) -> None:
        pass

    def __enter__(self) -> SimulatedCredential:
        return self

    def __exit__(self, *args: Any) -> None:
        pass


def principal_of(authorization: str | None) -> str | None:
    if authorization and authorization.lower().startswith("bearer sim."):
        return authorization[len("bearer sim."):]
    return None
