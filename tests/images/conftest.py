"""A real OCI registry for the image tests: Debian's ``docker-registry`` on 127.0.0.1 (installed
by ``.ci/run``); tests that need it skip with the reason when it is absent."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator.images.localregistry import REGISTRY_BIN, local_registry, push_rootfs_image


def run_registry(root: Path, htpasswd: Path | None = None) -> contextlib.AbstractContextManager[str]:
    if not REGISTRY_BIN:
        pytest.skip("docker-registry is not installed (apt-get install docker-registry; .ci/run does)")
    return local_registry(root, htpasswd)


@pytest.fixture(scope="module")
def registry(tmp_path_factory) -> Iterator[str]:
    with run_registry(tmp_path_factory.mktemp("registry")) as host:
        yield host


push_base = push_rootfs_image  # a one-layer stand-in base image from a folder
