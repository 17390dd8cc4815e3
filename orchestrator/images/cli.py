"""``deployctl image build``: the manifest and the command line's choices, turned into a
:func:`~orchestrator.images.build.build_image` call."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from orchestrator.errors import UserError
from orchestrator.images.build import BuiltImage, ImageInputs, build_image
from orchestrator.images.registry import Reference, RegistryAuth


def registry_auth(host: str, *, credential: Any = None) -> RegistryAuth:
    """Credentials from ``DEPLOYCTL_REGISTRY_USERNAME`` / ``DEPLOYCTL_REGISTRY_PASSWORD`` (never
    from the command line, where they would land in shell history), else the Azure identity for
    an Azure Container Registry, else anonymous."""
    user, password = os.environ.get("DEPLOYCTL_REGISTRY_USERNAME"), os.environ.get("DEPLOYCTL_REGISTRY_PASSWORD")
    if user:
        return RegistryAuth(user, password)
    if host.endswith(".azurecr.io") or credential is not None:
        if credential is None:
            from orchestrator.azure.session import AzureSession

            credential = AzureSession().get_credential()
        return RegistryAuth(credential=credential)
    return RegistryAuth()


def target_registry(manifest: Any, target: str | None) -> str:
    """The repository a container target pushes to (its ``registry`` setting)."""
    names = [t.name for t in manifest.targets]
    if target is None:
        raise UserError("give --registry HOST[:PORT]/REPO or --target NAME (a target with a registry)")
    if target not in names:
        raise UserError(f"no target named {target!r} in the manifest (targets: {', '.join(names)})")
    cfg = manifest.target(target)
    value = getattr(cfg, "registry", None)  # container targets' own setting
    if not value:
        raise UserError(f"target {target!r} ({cfg.kind}) has no registry setting; pass --registry HOST[:PORT]/REPO")
    return str(value) if "/" in str(value) else f"{value}/{manifest.name}"


def build_for_manifest(path: Path, *, target: str | None, registry: str | None, platform: str,
                       variables: Mapping[str, str], progress: Callable[[str], None] | None = None,
                       transport: Any = None, credential: Any = None) -> BuiltImage:
    from orchestrator.manifest import load_manifest

    manifest = load_manifest(path, variables=variables).manifest
    if registry and target:
        raise UserError("give either --registry or --target, not both")
    repository = registry or target_registry(manifest, target)
    host = Reference.parse(repository).host
    inputs = ImageInputs.from_manifest(manifest, platform=platform)
    return build_image(inputs, repository, auth=registry_auth(host, credential=credential), transport=transport,
                       progress=progress)
