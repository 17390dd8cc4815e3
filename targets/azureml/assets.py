"""Content-addressed assets: upload files ourselves, register them by datastore URI.

Files go to the workspace's default datastore under ``deployctl/<kind>/<sha256>/`` through a
blob client built with the run's transport (:func:`container_client`).
A marker blob ``<prefix>.deployctl-complete`` (beside the tree, never inside what is mounted)
is written last: when it is there, the upload is skipped (an interrupted upload has no marker
and is redone).  Registrations carry the content hash in
their tags; an existing version with the same hash is left alone.

Spec fields are stored in tags (``deployctl-f-<field>``, JSON), so ``read()`` reports what was
registered without downloading anything.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from orchestrator.azure.session import AzureSession
from orchestrator.packaging import iter_files

MARKER = ".deployctl-complete"


def datastore_uri(datastore: str, path: str, *, folder: bool = True) -> str:
    return f"azureml://datastores/{datastore}/paths/{path.strip('/')}" + ("/" if folder else "")


def upload_tree(container: Any, root: Path, prefix: str, sha: str, progress=lambda _m: None) -> bool:
    """Upload ``root`` (file or folder) under ``prefix``; return False when it was already there."""
    from azure.core.exceptions import ResourceNotFoundError

    marker = container.get_blob_client(f"{prefix}{MARKER}")
    try:
        if marker.download_blob().readall().decode().strip() == sha:
            progress(f"{prefix}: already uploaded")
            return False
    except ResourceNotFoundError:
        pass
    n = 0
    for rel, path in iter_files(root):
        with open(path, "rb") as f:
            container.upload_blob(f"{prefix}/{rel}", f, overwrite=True)
        n += 1
    marker.upload_blob(sha.encode(), overwrite=True)
    progress(f"{prefix}: uploaded {n} file(s)")
    return True


def download_tree(container: Any, prefix: str, dest: Path) -> int:
    """Download every blob under ``prefix`` (a folder, or one blob) into ``dest``; markers are skipped."""
    prefix = prefix.strip("/")
    n = 0
    blobs = list(container.list_blobs(name_starts_with=prefix + "/" if prefix else None))
    if not blobs and prefix:  # a single-file asset: the path names the blob itself
        blobs = [b for b in container.list_blobs(name_starts_with=prefix) if b.name == prefix]
    for blob in blobs:
        rel = blob.name[len(prefix):].lstrip("/") if prefix and blob.name != prefix else Path(blob.name).name
        if not rel or rel.endswith(MARKER) or ".." in Path(rel).parts:
            continue
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target, "wb") as f:
            container.download_blob(blob.name).readinto(f)
        n += 1
    return n


def parse_datastore_path(uri: str) -> tuple[str, str] | None:
    """(datastore, path) of ``azureml://[subscriptions/.../workspaces/<ws>/]datastores/<ds>/paths/<p>``."""
    marker = "/datastores/"
    if not uri.startswith("azureml://") or marker not in "/" + uri[len("azureml://"):]:
        return None
    rest = ("/" + uri[len("azureml://"):]).split(marker, 1)[1]
    ds, _, path = rest.partition("/paths/")
    return ds, path.strip("/")


def container_client(session: AzureSession, datastore: Any, credential: Any) -> Any:
    """A ContainerClient for an Azure ML blob datastore (``datastores.get(..., include_secrets=True)``)."""
    from azure.storage.blob import ContainerClient

    account_url = f"{datastore.protocol or 'https'}://{datastore.account_name}.blob.{datastore.endpoint}"
    creds = getattr(datastore, "credentials", None)
    key = getattr(creds, "account_key", None) or getattr(creds, "sas_token", None)
    # Storage keeps its own StorageRetryPolicy (see AzureSession.storage_kwargs): same budget, same transport.
    return ContainerClient(account_url, datastore.container_name, credential=key or credential,
                           **session.storage_kwargs())
