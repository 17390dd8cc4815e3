"""The workspace's asset store: environments, models and code versions, content-addressed.

:class:`AssetStore` is a collaborator of :class:`targets.azureml.base.AzureMLTarget`: it reads
and registers the assets the target's ``desired()`` names, uploads their files itself through
the run's transport (:mod:`.assets`), and hands models that live elsewhere to
:class:`~targets.azureml.models.ModelSource`.  Registered versions are immutable history: a
delete archives them, a registry-shared model is never archived by one workspace, and versions the
manifest's other targets in the workspace still use are kept (they are the manifest's, not the
last writer's: any of its targets reads them as its own).
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from typing import TYPE_CHECKING, Any

from orchestrator.azure.errors import AzureNotFound
from orchestrator.azure.tags import spec_from_tags
from orchestrator.lazy import cached_property
from orchestrator.plan import spec_hash
from orchestrator.target import TAG_MANIFEST, TAG_SPEC, TAG_TARGET, Observed, Resource
from targets.azureml import assets
from targets.azureml.config import AzureMLConfig, BatchEndpointConfig, OnlineEndpointConfig
from targets.azureml.models import TAG_SOURCE
from targets.azureml.spec import T_ENV, T_MODEL, Desired

if TYPE_CHECKING:
    from targets.azureml.base import AzureMLTarget


def inference_config() -> dict[str, Any]:
    """Where Azure ML's front end reaches deployctl's runtime in its image (the port of
    :mod:`orchestrator.images.build`): liveness and readiness ``GET /ready``, scoring ``POST /score``.
    Not ``/``, the runtime's other health route: Azure ML's API refuses a route path without a
    letter, digit or underscore (``Route.path`` pattern ``[a-zA-Z0-9_]``)."""
    from orchestrator.images.build import PORT

    return {"liveness_route": {"path": "/ready", "port": PORT}, "readiness_route": {"path": "/ready", "port": PORT},
            "scoring_route": {"path": "/score", "port": PORT}}


class AssetStore:
    def __init__(self, target: AzureMLTarget) -> None:
        self.t = target

    # -- read --------------------------------------------------------------------------------
    def key(self, r: Resource) -> str:
        return self.t.d.asset_key(r.type, r.name)

    def _observed(self, r: Resource, obj: Any) -> Observed | None:
        t = self.t
        if obj is None:
            return None
        tags = dict(getattr(obj, "tags", None) or {})
        spec = spec_from_tags(tags)
        source = r.spec.get("source")
        same_copy = bool(source) and (tags.get(TAG_SOURCE) == source or r.spec.get("copy") == "share")
        if same_copy:
            spec = dict(r.spec)  # a copy (or registry share) of the same source: reuse it
        shared = r.spec.get("copy") == "share"  # registry assets carry their first owner's tags
        ours = tags.get(TAG_MANIFEST) == t.manifest.name
        if (spec.get("sha256") or same_copy) and spec == dict(r.spec) and (TAG_MANIFEST not in tags or shared or ours):
            # identical content registered by someone else: immutable, so ours to use as is; and
            # one the manifest's other targets in this workspace registered is the manifest's (the
            # target tag only says which of them wrote it last)
            tags.update({TAG_MANIFEST: t.manifest.name, TAG_TARGET: t.config.name, TAG_SPEC: spec_hash(r.spec)})
        sharers = [c.name for c in self.sharers()]
        on_delete = (f"kept in registry {t.cfg.registry} (shared with other workspaces)" if shared
                     else f"kept while target(s) {', '.join(sharers)} of this manifest still use it (the last one "
                          "archives it)" if sharers
                     else "archived, not deleted (registered versions are history)")
        return Observed(r.type, r.name, spec, tags, key=self.key(r), version=getattr(obj, "version", None),
                        on_delete=on_delete)

    def sharers(self) -> list[AzureMLConfig]:
        """The manifest's other Azure ML targets in this workspace: they use the same environment,
        model and code versions (names and versions come from the manifest's content)."""
        t = self.t
        here = (t.cfg.subscription.lower(), t.cfg.resource_group.lower(), t.cfg.workspace.lower())
        return [c for c in t.manifest.targets if isinstance(c, AzureMLConfig) and c.name != t.config.name
                and (c.subscription.lower(), c.resource_group.lower(), c.workspace.lower()) == here]

    def _still_used(self) -> list[str]:
        """The sharers whose endpoint still exists.  Each target deletes its endpoint before its
        assets, so the last of several targets being destroyed finds none and archives."""
        t = self.t
        used = []
        for c in self.sharers():
            ops = t.ml.batch_endpoints if isinstance(c, BatchEndpointConfig) else t.ml.online_endpoints
            name = Desired(t.manifest, c).endpoint
            try:
                t.op(f"get endpoint {name}", partial(ops.get, name))
            except AzureNotFound:
                continue
            used.append(c.name)
        return used

    @cached_property
    def code_ops(self) -> Any:
        """CodeOperations: MLClient 1.35 has no public ``code`` property; this is the instance its
        own deployment code path uses (read, never patched)."""
        return getattr(self.t.ml, "code", None) or self.t.ml._code

    def _get(self, r: Resource) -> Any:
        t = self.t
        name, version = r.name.split(":", 1)
        if r.type == T_MODEL and r.spec.get("copy") == "share":  # in a registry: azure-ai-ml's registry client
            ops = t.model_source.registry_ml.models
            try:
                return t.op(f"get {r.address}", lambda: ops.get(name=name, version=version), r.address)
            except AzureNotFound:
                return None
        kind = {T_ENV: "environments", T_MODEL: "models"}[r.type]
        try:
            obj = t.op(f"get {r.address}", lambda: t.reader.asset_version(kind, name, version), r.address)
        except AzureNotFound:
            return None
        return None if obj.archived else obj  # an archived version was destroyed

    def read(self, desired: list[Resource]) -> list[Observed]:
        t = self.t
        t.location  # noqa: B018 - the workspace must exist and be readable: say so plainly
        ref = t.d.model_ref
        if ref is not None and ref.registry:
            t.model_source.check_registry_region(ref.registry)
        out = []
        for r in desired:
            if r.type in (T_ENV, T_MODEL):
                if r.type == T_MODEL and r.spec.get("copy"):
                    t.model_source.check()
                o = self._observed(r, self._get(r))
                if o:
                    out.append(o)
        return out

    # -- write -------------------------------------------------------------------------------
    @cached_property
    def datastore(self) -> Any:
        t = self.t
        return t.op("get default datastore", lambda: t.ml.datastores.get_default(include_secrets=True))

    @cached_property
    def container(self) -> Any:
        t = self.t
        return assets.container_client(t.session, self.datastore, t.session.get_credential(t.cfg.subscription))

    def ensure_code(self) -> str:
        """Upload and register the code version when missing; its ``azureml:`` reference."""
        from azure.ai.ml.entities._assets._artifacts.code import Code  # not re-exported in 1.35

        t = self.t
        name, version, sha = t.d.code_name, t.d.code_sha[:12], t.d.code_sha
        path = Desired.asset_path("code", sha)
        try:
            existing = t.op(f"get code {name}:{version}", lambda: self.code_ops.get(name=name, version=version))
        except AzureNotFound:
            existing = None
        if existing is not None and path in str(getattr(existing, "path", "")):
            t.ctx.progress(f"code {name}:{version}: already registered")
            return f"azureml:{name}:{version}"
        root = t.manifest.code.path
        t.op(f"upload code {version}", lambda: assets.upload_tree(self.container, root, path, sha, t.ctx.progress))
        entity = Code(name=name, version=version, path=assets.datastore_uri(self.datastore.name, path))
        t.op(f"register code {name}:{version}", lambda: self.code_ops.create_or_update(entity))
        return f"azureml:{name}:{version}"

    def create(self, r: Resource, tags: Mapping[str, str]) -> None:
        from azure.ai.ml.entities import Environment, Model

        t = self.t
        name, version = r.name.split(":", 1)
        all_tags = t.tags(r.spec, tags)
        if r.type == T_MODEL and r.spec.get("copy"):
            t.model_source.copy(r, all_tags)
            return
        if r.type == T_ENV and t.d.builds_image:
            env = Environment(name=name, version=version, image=t.environment_image(), tags=all_tags,
                              inference_config=inference_config() if isinstance(t.cfg, OnlineEndpointConfig) else None)
            t.op(f"register {r.address}", lambda: t.ml.environments.create_or_update(env), r.address)
            return
        if r.type == T_ENV:
            env = Environment(name=name, version=version, image=t.d.image, conda_file=t.d.conda, tags=all_tags)
            t.op(f"register {r.address}", lambda: t.ml.environments.create_or_update(env), r.address)
            return
        root = t.manifest.model.path
        assert root is not None
        folder = root.is_dir()
        # a folder's files go under <sha>/<folder>/; a single file is <sha>/<file> itself
        prefix = r.spec["path"] if folder else r.spec["path"].rsplit("/", 1)[0]
        t.op(f"upload {r.address}", lambda: assets.upload_tree(self.container, root, prefix,
                                                                r.spec["sha256"], t.ctx.progress), r.address)
        uri = assets.datastore_uri(self.datastore.name, r.spec["path"], folder=folder)
        entity = Model(name=name, version=version, path=uri, type="custom_model", tags=all_tags,
                       description=f"deployctl: {t.manifest.name}")
        t.op(f"register {r.address}", lambda: t.ml.models.create_or_update(entity), r.address)

    def delete(self, o: Observed) -> None:
        """Archive (registered versions are immutable history other deployments may use)."""
        t = self.t
        name, version = o.name.split(":", 1)
        if o.type == T_MODEL and o.spec.get("copy") == "share":
            return  # registry assets are shared with other workspaces by design: never archived by one
        if o.type in (T_MODEL, T_ENV) and (users := self._still_used()):
            t.ctx.progress(f"{o.address}: kept, still used by target(s) {', '.join(users)}")
            return
        if o.type == T_MODEL:
            t.op(f"archive {o.address}", lambda: t.ml.models.archive(name=name, version=version), o.address)
        elif o.type == T_ENV:
            t.op(f"archive {o.address}", lambda: t.ml.environments.archive(name=name, version=version), o.address)
        # code versions cannot be archived; they are content-addressed and cost nothing to keep
