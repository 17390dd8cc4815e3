"""Build once, promote everywhere: copy an image, by digest, into another registry (any
subscription) with ACR's ``importImage``.  The registry copies it; no byte passes through this
machine, and the digest a prod stage deploys is exactly the one dev tested."""

from __future__ import annotations

from typing import Any

from orchestrator.errors import TargetError, UserError
from orchestrator.images.registry import Reference


def registry_id(subscription: str, resource_group: str, name: str) -> str:
    return f"/subscriptions/{subscription}/resourceGroups/{resource_group}/providers/Microsoft.ContainerRegistry/registries/{name}"


def promote_image(session: Any, image: str, *, source_registry_id: str, subscription: str, resource_group: str,
                  registry: str) -> str:
    """Import ``image`` (``host/repo@sha256:...``, from the registry ``source_registry_id``) into
    ``registry``; returns the promoted reference, same digest, tagged with it."""
    from azure.core.exceptions import HttpResponseError
    from azure.mgmt.containerregistry import ContainerRegistryManagementClient
    from azure.mgmt.containerregistry.models import ImportImageParameters, ImportSource

    ref = Reference.parse(image)
    if not ref.digest:
        raise UserError(f"promote {image!r}: give the image by digest (host/repo@sha256:...), so what ships is what was tested")
    client = ContainerRegistryManagementClient(session.get_credential(subscription), subscription, **session.client_kwargs())
    tag = ref.digest.replace(":", "-")
    params = ImportImageParameters(
        source=ImportSource(resource_id=source_registry_id, source_image=f"{ref.repository}@{ref.digest}"),
        target_tags=[f"{ref.repository}:{tag}"], mode="Force")
    try:
        client.registries.begin_import_image(resource_group, registry, params).result()
        target = client.registries.get(resource_group, registry)
    except HttpResponseError as e:
        raise TargetError(f"importing {image} into registry {registry} failed: {e.message}") from None
    return f"{target.login_server}/{ref.repository}@{ref.digest}"
