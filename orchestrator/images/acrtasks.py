"""A user's own Dockerfile (``environment.dockerfile``) is built by ACR Tasks, never on this
machine: what ``az acr build`` does.

The build context (the Dockerfile's folder, less what its ``.dockerignore`` excludes) goes up as a reproducible tar.gz through the registry's upload URL
(``get_build_source_upload_url``, a block blob), ``schedule_run`` starts a ``DockerBuildRequest``,
and the run is polled while its log is streamed (``get_log_sas_url``, read from where the last
poll stopped).  A failed run is one error carrying the log's tail.  Under ``--simulate`` the
waits run on the simulator's virtual clock.
"""

from __future__ import annotations

import gzip
import hashlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.azure.ops import sleeper
from orchestrator.errors import TargetError, UserError
from orchestrator.images.dockerignore import keeper
from orchestrator.images.layers import tar_chunks

TERMINAL = ("Succeeded", "Failed", "Canceled", "Error", "Timeout")


@dataclass(frozen=True)
class TaskBuild:
    run_id: str
    status: str
    image: str
    log: str


@dataclass(frozen=True)
class BuildContext:
    """A Dockerfile's build context, ready to upload: ``archive`` (tar.gz) and ``tag``, the digest
    of the uncompressed tar and the Dockerfile's name (what the image is made from, so an
    unchanged context is found in the registry instead of rebuilt)."""

    archive: bytes
    tag: str


def _context_tar(context: Path, dockerfile: str) -> Iterator[bytes]:
    """The context's reproducible tar, as ``.dockerignore`` leaves it."""
    if not context.is_dir():
        raise UserError(f"the Dockerfile's build context {context} is not a folder")
    if not (context / dockerfile).is_file():
        raise UserError(f"environment.dockerfile: {dockerfile} not found in the build context {context}")
    return tar_chunks([("", context)], keep=keeper(context, dockerfile))


def context_tag(context: Path, dockerfile: str, chunks: Iterable[bytes] | None = None) -> str:
    """The image tag of a build context: the digest of its tar and the Dockerfile's name (what
    the plan keys a Dockerfile image by, and what the registry is asked for before a build)."""
    h = hashlib.sha256()
    for chunk in chunks if chunks is not None else _context_tar(context, dockerfile):
        h.update(chunk)
    h.update(b"\0" + dockerfile.encode())
    return "ctx-" + h.hexdigest()


def build_context(context: Path, dockerfile: str) -> BuildContext:
    """The reproducible context of ``context/dockerfile`` (same content, same bytes, same tag)."""
    raw = b"".join(_context_tar(context, dockerfile))
    return BuildContext(gzip.compress(raw, compresslevel=6, mtime=0), context_tag(context, dockerfile, [raw]))


def dockerfile_image(session: Any, registry_client: Any, *, subscription: str, resource_group: str, registry: str,
                     dockerfile: Path, repository: str, progress: Callable[[str], None] | None = None,
                     poll_s: float = 3.0) -> str:
    """The image of ``dockerfile`` (its folder is the context) in ``registry``, by digest: found
    under the context's tag when that context was built before, else built by ACR Tasks now."""
    say = progress or (lambda _m: None)
    ctx = build_context(dockerfile.parent, dockerfile.name)
    host = registry_client.ref.host
    found = registry_client.manifest_exists(repository, ctx.tag)
    if found:
        say(f"{dockerfile.name}: its context is unchanged; {host}/{repository}:{ctx.tag[:16]} is already built")
        return f"{host}/{repository}@{found}"
    built = build_with_acr_tasks(session, subscription=subscription, resource_group=resource_group, registry=registry,
                                 context=dockerfile.parent, dockerfile=dockerfile.name, repository=repository,
                                 progress=progress, poll_s=poll_s, prepared=ctx)
    digest = registry_client.manifest_exists(repository, ctx.tag)
    if not digest:
        raise TargetError(f"ACR Tasks run {built.run_id} succeeded but {host}/{repository}:{ctx.tag} is not in the registry")
    return f"{host}/{repository}@{digest}"


def build_with_acr_tasks(session: Any, *, subscription: str, resource_group: str, registry: str, context: Path,
                         dockerfile: str, repository: str, progress: Callable[[str], None] | None = None,
                         poll_s: float = 3.0, timeout_s: float = 3600, prepared: BuildContext | None = None) -> TaskBuild:
    """Build ``context/dockerfile`` in ``registry`` with ACR Tasks; the image is tagged with the
    context's digest (``repository:ctx-<sha256>``, see :func:`build_context`)."""
    from azure.mgmt.containerregistrytasks import ContainerRegistryTasksMgmtClient
    from azure.mgmt.containerregistrytasks.models import DockerBuildRequest, PlatformProperties
    from azure.storage.blob import BlobClient

    say = progress or (lambda _m: None)
    ctx = prepared or build_context(context, dockerfile)
    data = ctx.archive
    image = f"{repository}:{ctx.tag}"
    client = ContainerRegistryTasksMgmtClient(session.get_credential(subscription), subscription, **session.client_kwargs())
    source = client.registries.get_build_source_upload_url(resource_group, registry)
    if not source.upload_url or not source.relative_path:
        raise TargetError(f"registry {registry} gave no upload URL for the build context")
    say(f"uploading the build context ({len(data):,} bytes)")
    BlobClient.from_blob_url(source.upload_url, **session.storage_kwargs()).upload_blob(data, overwrite=True)
    run = client.registries.schedule_run(resource_group, registry, DockerBuildRequest(
        source_location=source.relative_path, docker_file_path=dockerfile, image_names=[image], is_push_enabled=True,
        platform=PlatformProperties(os="Linux", architecture="amd64")))
    run_id = run.run_id
    say(f"ACR Tasks run {run_id} started")
    sleep, waited, log, status = sleeper(session), 0.0, "", ""
    while True:
        status = str(getattr(client.runs.get(resource_group, registry, run_id).status, "value", ""))
        log = _stream_log(client, session, resource_group, registry, run_id, log, say)
        if status in TERMINAL:
            break
        if waited >= timeout_s:
            client.runs.cancel(resource_group, registry, run_id)
            raise TargetError(f"ACR Tasks run {run_id} took longer than {timeout_s:.0f}s and was canceled")
        sleep(poll_s)
        waited += poll_s
    if status != "Succeeded":
        tail = "\n".join(log.strip().splitlines()[-15:])
        raise TargetError(f"ACR Tasks run {run_id} building {dockerfile} ended {status}:\n{tail}")
    return TaskBuild(run_id, status, f"{registry}.azurecr.io/{image}", log)


def _stream_log(client: Any, session: Any, rg: str, registry: str, run_id: str, seen: str,
                say: Callable[[str], None]) -> str:
    """The run's log so far; lines not seen before are passed to ``say``."""
    from azure.core.exceptions import ResourceNotFoundError
    from azure.storage.blob import BlobClient

    link = client.runs.get_log_sas_url(rg, registry, run_id).log_link
    if not link:
        return seen
    try:
        blob = BlobClient.from_blob_url(link, **session.storage_kwargs())
        new = blob.download_blob(offset=len(seen.encode())).readall().decode("utf-8", "replace") if seen else \
            blob.download_blob().readall().decode("utf-8", "replace")
    except ResourceNotFoundError:
        return seen  # no log written yet
    except Exception as e:  # a range past the end: nothing new
        if getattr(e, "status_code", None) == 416:
            return seen
        raise
    for line in new.splitlines():
        say(line)
    return seen + new
