"""The image a container target runs, chosen in one place for every such target (aci,
app-service with ``run: image``): :func:`image_for`.

- without ``environment.dockerfile``: assembled by deployctl (:func:`~orchestrator.images.build.build_image`)
  on ``python:<python>-slim`` or ``environment.base_image``;
- with it: the Dockerfile's image is built by ACR Tasks in the target's registry (repository
  ``<repo>-environment``, tagged with its context's digest, so an unchanged context is found, not
  rebuilt), and deployctl layers its runtime, the model and the code on that image, by digest.

Either way the result is one image by digest in the target's registry.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

from orchestrator.images.build import BuiltImage, ImageInputs, build_image
from orchestrator.images.registry import Reference, RegistryAuth, RegistryClient


def image_path(inputs: ImageInputs) -> str:
    """How the image is made, for the plan.  Pure."""
    if inputs.dockerfile is not None:
        return (f"image: environment built by ACR Tasks from Dockerfile {inputs.dockerfile} (rebuilt only when its "
                "build context changes); deployctl's runtime, the model and the code layered on it by deployctl")
    return f"image: assembled by deployctl on {inputs.base} (no Docker daemon; layers cached by content)"


def environment_repository(repository: str) -> str:
    return f"{repository}-environment"


def image_for(inputs: ImageInputs, session: Any, *, registry: str, subscription: str, resource_group: str,
              repository: str, progress: Callable[[str], None] | None = None) -> BuiltImage:
    """Build the image of ``inputs`` into the Azure Container Registry ``registry`` (in
    ``subscription``/``resource_group``) as ``<login server>/<repository>@sha256:...``."""
    say = progress or (lambda _m: None)
    login = f"{registry}.azurecr.io"
    auth = RegistryAuth(credential=session.get_credential(subscription))
    if inputs.dockerfile is not None:
        from orchestrator.images.acrtasks import dockerfile_image

        env_repo = environment_repository(repository)
        client = RegistryClient(Reference.parse(f"{login}/{env_repo}"), auth=auth, transport=session.transport)
        base = dockerfile_image(session, client, subscription=subscription, resource_group=resource_group,
                                registry=registry, dockerfile=inputs.dockerfile, repository=env_repo, progress=progress)
        inputs = replace(inputs, base_image=base, dockerfile=None, base_from=inputs.dockerfile)
        say(f"layering deployctl's runtime, the model and the code on {base}")
    else:
        say(f"building the image into {login} (layers cached by content)")
    return build_image(inputs, f"{login}/{repository}", auth=auth, transport=session.transport, progress=progress)
