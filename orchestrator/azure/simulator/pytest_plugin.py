"""pytest plugin (entry point ``deployctl``): the ``azure_simulator`` fixture.

    def test_my_pipeline(azure_simulator):
        azure_simulator.add_workspace(SUB, "rg", "ws")
        ml = MLClient(azure_simulator.credential, SUB, "rg", "ws",
                      transport=azure_simulator.transport, show_progress=False)

Function-scoped, strict, seeded.  During the test any real DNS lookup or socket connect fails
(except 127.0.0.1, for the simulator's optional HTTP port and local scoring servers), and the
environment (MLClient sets ``AZUREML_CURRENT_CLOUD``) is restored afterwards.  Importing this
module imports no Azure package; without azure-core the fixture skips.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from typing import Any

import pytest

LOCAL = ("127.0.0.1", "localhost", "::1")


class NetworkBlocked(OSError):
    """A test tried to reach the network while the Azure simulator was in use."""


def _is_local(address: Any) -> bool:
    if isinstance(address, tuple) and address:
        return str(address[0]) in LOCAL
    return isinstance(address, (str, bytes))  # AF_UNIX paths are local


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    real_getaddrinfo = socket.getaddrinfo
    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host is None or str(host) in LOCAL or (isinstance(host, bytes) and host.decode() in LOCAL):
            return real_getaddrinfo(host, *args, **kwargs)
        raise NetworkBlocked(f"DNS lookup of {host!r} during a simulated-Azure test")

    def connect(self: socket.socket, address: Any) -> Any:
        if not _is_local(address):
            raise NetworkBlocked(f"connect to {address!r} during a simulated-Azure test")
        return real_connect(self, address)

    def connect_ex(self: socket.socket, address: Any) -> Any:
        if not _is_local(address):
            raise NetworkBlocked(f"connect to {address!r} during a simulated-Azure test")
        return real_connect_ex(self, address)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)


@pytest.fixture
def azure_simulator(no_network: None) -> Iterator[Any]:
    pytest.importorskip("azure.core", reason="azure-core is not installed (pip install 'deployctl[azure]')")
    from orchestrator.azure.simulator import AzureSimulator

    saved = dict(os.environ)
    sim = AzureSimulator(seed=0, strict=True)
    try:
        yield sim
    finally:
        sim.close()
        os.environ.clear()
        os.environ.update(saved)


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Stop the warm scorers of simulated clouds the tests persisted under pytest's temporary
    folder (``deployctl apply --simulate --state-dir tmp_path``): a test run leaves no servers."""
    factory = getattr(session.config, "_tmp_path_factory", None)
    base = getattr(factory, "_basetemp", None)  # set only when a test used tmp_path
    if base is None or not base.is_dir():
        return
    from orchestrator.azure.simulator.scorers import ScorerRegistry

    for home in base.rglob("*-scorers"):
        if home.is_dir():
            ScorerRegistry(home).reap(set())
