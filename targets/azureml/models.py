"""A model that lives elsewhere: read it from its source workspace, copy it into the target's
workspace (across workspaces and subscriptions), or share it through an Azure ML registry.

:class:`ModelSource` is a collaborator of :class:`targets.azureml.base.AzureMLTarget`: it uses
the target's operation runner, clients and asset store, and owns the source-side clients.  The
checks (source exists and is readable, registry serves the workspace's region) run in ``read()``,
before any write.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestrator.azure.errors import AzureOperationError, describe, is_forbidden, is_not_found
from orchestrator.lazy import cached_property
from orchestrator.target import Resource
from targets.azureml import assets
from targets.azureml.client import ml_client
from targets.azureml.spec import Desired

if TYPE_CHECKING:
    from targets.azureml.base import AzureMLTarget

TAG_SOURCE = "deployctl-source"
TAG_SHA = "deployctl-sha256"


class ModelSource:
    def __init__(self, target: AzureMLTarget) -> None:
        self.t = target

    @property
    def _source_credential(self) -> Any:
        t = self.t
        ref = t.d.model_ref
        assert ref and ref.subscription
        return t.session.credential_for(ref.subscription, t.cfg.model_source.credential if t.cfg.model_source else None)

    @cached_property
    def source_ml(self) -> Any:
        ref = self.t.d.model_ref
        assert ref and ref.subscription
        return ml_client(self.t.session, ref.subscription, ref.resource_group, ref.workspace,
                         credential=self._source_credential)

    @cached_property
    def registry_ml(self) -> Any:
        """An MLClient on the target's ``registry`` (constructing it discovers the registry's
        regional host: that is a request, through the session's transport like every other)."""
        t = self.t
        return t.op(f"discover registry {t.cfg.registry}",
                    lambda: ml_client(t.session, t.cfg.subscription, registry=t.cfg.registry))

    @cached_property
    def source_model(self) -> Any:
        """The source model, checked: exists, readable, usable from this workspace's region."""
        t = self.t
        ref = t.d.model_ref
        assert ref
        try:
            return self.source_ml.models.get(name=ref.name, version=ref.version)
        except Exception as e:
            if is_forbidden(e):
                raise t.fail(f"no permission to read model {ref.uri} ({describe(e)})",
                             hint=f"grant this identity AzureML Data Scientist (or Reader) on workspace "
                                  f"{ref.workspace} in subscription {ref.subscription}, or set "
                                  f"model_source.credential") from e
            if is_not_found(e):
                raise t.fail(f"model {ref.name} version {ref.version} not found in workspace {ref.workspace} "
                             f"(subscription {ref.subscription})", hint="check model.uri") from e
            raise t.fail(f"cannot read model {ref.uri}: {describe(e)}") from e

    def check(self) -> None:
        self.source_model  # noqa: B018 - raises a precise error when missing or forbidden
        if self.t.d.model_copy == "share":
            assert self.t.cfg.registry
            self.check_registry_region(self.t.cfg.registry)

    def check_registry_region(self, registry: str) -> None:
        """A registry serves only the regions it is replicated to."""
        t = self.t
        try:
            rg = t.cfg.registry_resource_group or t.cfg.resource_group
            reg = t.op("get registry", lambda: ml_client(t.session, t.cfg.subscription, rg).registries.get(registry))
        except AzureOperationError as e:
            if is_not_found(e) or is_forbidden(e):
                raise t.fail(f"registry {registry!r} not found or not readable ({describe(e)})") from e
            raise
        regions = {str(getattr(r, "location", r)).lower().replace(" ", "")
                   for r in (getattr(reg, "replication_locations", None) or [])}
        here = t.location.lower().replace(" ", "")
        if regions and here not in regions:
            raise t.fail(f"registry {registry} is not replicated to {t.location} "
                         f"(it is in {', '.join(sorted(regions))})",
                         hint="add the region to the registry, or drop `registry` to copy the model instead")

    def copy(self, r: Resource, tags: dict[str, str]) -> None:
        """Download from the source datastore, upload content-addressed, register here."""
        from azure.ai.ml.entities import Model

        t = self.t
        ref = t.d.model_ref
        assert ref
        src = self.source_model
        if r.spec.get("copy") == "share":
            self.share(r)
            return
        parsed = assets.parse_datastore_path(str(src.path))
        if parsed is None:
            raise t.fail(f"cannot copy model {ref.uri}: its path {src.path} is not on a datastore")
        ds_name, path = parsed
        src_ds = t.op("get source datastore", lambda: self.source_ml.datastores.get(ds_name, include_secrets=True))
        src_container = assets.container_client(t.session, src_ds, self._source_credential)
        t.ctx.state_dir.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix="model-copy-", dir=t.ctx.state_dir))
        leaf = path.rstrip("/").rsplit("/", 1)[-1] or ref.name  # keeps AZUREML_MODEL_DIR/<name> as at the source
        try:
            n = t.op(f"download {ref.uri}", lambda: assets.download_tree(src_container, path, tmp / "files"))
            if not n:
                raise t.fail(f"model {ref.uri} has no files at {src.path}")
            from orchestrator.packaging import tree_digest

            files = list((tmp / "files").iterdir())
            single = len(files) == 1 and files[0].is_file() and files[0].name == leaf
            root = files[0] if single else tmp / "files"
            sha = tree_digest(root)
            dest = f"{Desired.asset_path('models', sha)}/{leaf}"
            prefix = dest.rsplit("/", 1)[0] if single else dest
            t.op(f"upload {r.address}", lambda: assets.upload_tree(t.store.container, root, prefix, sha,
                                                                    t.ctx.progress), r.address)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        model = Model(name=ref.name, version=ref.version,
                      path=assets.datastore_uri(t.store.datastore.name, dest, folder=not single),
                      type=getattr(src, "type", None) or "custom_model",
                      tags={**tags, TAG_SOURCE: ref.uri, TAG_SHA: sha},
                      description=f"copy of {ref.uri} (deployctl)")
        t.op(f"register {r.address}", lambda: t.ml.models.create_or_update(model), r.address)

    def share(self, r: Resource) -> None:
        """What azure-ai-ml's ``ModelOperations.share()`` does, through clients on the session's
        transport (``share()`` builds its registry client without it): read the source workspace's
        id and region, then ask the registry to import the workspace asset
        (``WorkspaceAssetReference``: POST ``.../registries/<r>/import`` on the registry's regional
        host, a long-running operation), under the same name and version.  The registry copies the
        files; the source credential is used, as ``share()`` uses the source workspace's client.
        Safe to retry: a version that an earlier attempt already imported is taken as done."""
        from azure.ai.ml.entities._assets.workspace_asset_reference import WorkspaceAssetReference

        t = self.t
        ref = t.d.model_ref
        assert ref and ref.workspace and t.cfg.registry
        registry = t.cfg.registry
        t.ctx.progress(f"sharing {ref.uri} through registry {registry}")
        ws = t.op("get source workspace", lambda: self.source_ml.workspaces.get(ref.workspace))
        guid = getattr(ws, "_workspace_id", None)
        if not guid:
            raise t.fail(f"cannot share {ref.uri}: workspace {ref.workspace} did not report its id")
        # azure.ai.ml.constants._common.ASSET_ID_FORMAT, the id share() builds
        asset_id = f"azureml://locations/{ws.location}/workspaces/{guid}/models/{ref.name}/versions/{ref.version}"
        cred = self._source_credential
        reg = t.op(f"discover registry {registry}", lambda: ml_client(t.session, t.cfg.subscription,
                                                                     registry=registry, credential=cred))

        def share() -> Any:
            try:
                return reg.models.create_or_update(WorkspaceAssetReference(name=ref.name, version=ref.version,
                                                                           asset_id=asset_id))
            except Exception as e:
                if "already exists in registry" not in str(e):
                    raise
                return reg.models.get(name=ref.name, version=ref.version)  # an earlier attempt got through

        t.op(f"share {r.address}", share, r.address)
