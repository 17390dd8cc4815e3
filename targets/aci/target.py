"""``aci``: real-time scoring on Azure Container Instances, from deployctl's own image.

Resources (see :mod:`orchestrator.target` for the contract): one, ``aci.group/<manifest>-<target>``,
the container group that serves the current version.  Each version runs in its own group,
``<manifest>-<target>-<version>`` (the version is the spec's digest), because ACI must re-create
a group to change its CPU, memory or ports and restarts it in place for anything else: a new
version starts beside the live one, is smoke-tested on its own address, is tagged
``deployctl-promoted`` (the live version is the latest promoted group), and only then is the
previous group deleted (kept, with ``keep_previous``).  A group that fails its start or smoke test
is deleted and the previous one keeps serving.

Kill-safety: every group carries deployctl's ownership tags from its first PUT, so ``read()``
finds all of them.  A group that never passed its smoke test, or a promoted one older than the
live one, is reported as a stray (``aci.group/<group name>``) and the next apply deletes it; an
unpromoted group already named as the version being applied is left for that apply to reuse.

The scoring URI changes with every version: ACI cannot move a DNS label between container groups,
and a fixed name needs something in front (Traffic Manager, Front Door, Application Gateway).
``status`` and ``invoke`` always use the live group's address; the plan says so.

The image: built once (daemonless, :mod:`orchestrator.images`) into ``registry`` or, with
``promote_from``, into that registry and imported by digest; the group pulls it by digest with a
user-assigned identity or a repository-scoped ACR token, never admin credentials.  The scoring key
(ACI has none) goes in as a ``secureValue`` environment variable that the runtime checks; it is
kept in the target's state folder and rotated by deleting that file and applying again.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, ClassVar

from orchestrator import sizing
from orchestrator.azure import quota, registries
from orchestrator.azure.base import AzureTarget
from orchestrator.azure.errors import AzureNotFound, describe, error_code
from orchestrator.azure.keys import KEY_ENV, ScoringKey
from orchestrator.azure.tags import spec_from_tags, spec_tags
from orchestrator.lazy import cached_property
from orchestrator.manifest.model import ScoringType, TargetConfig
from orchestrator.packaging import tree_size
from orchestrator.plan import Action, Change, digest, spec_hash
from orchestrator.requirements import parse_requirements
from orchestrator.target import (
    TAG_MANIFEST,
    TAG_SPEC,
    TAG_TARGET,
    Finding,
    InvokeRequest,
    InvokeResult,
    Observed,
    Resource,
    Severity,
)
from targets.aci import limits
from targets.aci.config import AciConfig, RegistryRef

T_GROUP = "aci.group"
TAG_PROMOTED = "deployctl-promoted"  # when the group passed its smoke test (ns since the epoch)
TAG_KEPT = "deployctl-kept"  # a previous version kept running by keep_previous
TAG_VERSION = "deployctl-version"
CONTAINER = "scoring"
TOKEN_SCOPE_MAP = "_repositories_pull"  # ACR's built-in scope map: pull from every repository
READY_TIMEOUT_S = 900.0  # pulling a multi-GB image and init() of a large model take minutes on ACI
URI_NOTE = ("the scoring URI changes with each version (ACI cannot move a DNS label between container groups; put "
            "Traffic Manager or Front Door in front for a fixed name)")


class AciTarget(AzureTarget):
    kind = "aci"
    scoring_types = frozenset({ScoringType.real_time})
    config_model: ClassVar[type[TargetConfig]] = AciConfig
    description = "Azure Container Instances: deployctl's image in a container group, blue/green by group"

    @property
    def cfg(self) -> AciConfig:
        assert isinstance(self.config, AciConfig)
        return self.config

    # -- names ----------------------------------------------------------------------------------
    @property
    def base(self) -> str:
        return f"{self.manifest.name}-{self.cfg.name}"[:50].rstrip("-")

    @property
    def label(self) -> str:
        return self.cfg.dns_label or self.base

    def _registry(self, ref: str | RegistryRef) -> tuple[str, str, str]:
        """(name, subscription, resource group) of a registry setting."""
        return registries.resolve(ref, self.cfg.subscription, self.cfg.resource_group)

    @property
    def login(self) -> str:
        return f"{self._registry(self.cfg.registry)[0]}.azurecr.io"

    @property
    def repository(self) -> str:
        return f"deployctl/{self.manifest.name}"

    @property
    def token_name(self) -> str:
        return f"deployctl-{self.base}"[:50].rstrip("-")

    def group_id(self, name: str) -> str:
        return (f"/subscriptions/{self.cfg.subscription}/resourceGroups/{self.cfg.resource_group}"
                f"/providers/Microsoft.ContainerInstance/containerGroups/{name}")

    # -- sizing and inputs (pure) ----------------------------------------------------------------
    @cached_property
    def requirement_lines(self) -> list[str]:
        env = self.manifest.environment
        return parse_requirements(env.requirements, env.conda_file)[0]

    @cached_property
    def size(self) -> limits.GroupSize:
        r = self.manifest.resources
        model = self.manifest.model.path
        req = sizing.requirement(model_bytes=tree_size(Path(model)) if model else 0, cpu=r.cpu, memory_gib=r.memory_gb,
                                 gpu=r.gpu, requirement_lines=self.requirement_lines)
        try:
            return limits.size_group(req)
        except limits.AciLimitError as e:
            raise self.fail(str(e), hint="lower resources (memory_gb, cpu, gpu) or choose another target kind") from e

    @cached_property
    def image_inputs(self) -> Any:
        from orchestrator.images.build import ImageInputs

        return ImageInputs.from_manifest(self.manifest)

    @cached_property
    def inputs_digest(self) -> str:
        """What the image is made of, by content: an unchanged digest is an unchanged image."""
        return digest(self.image_inputs.content())

    # -- the scoring key (ACI has none: see orchestrator.azure.keys) ------------------------------
    @cached_property
    def scoring_key(self) -> ScoringKey:
        return ScoringKey(self.ctx)

    # -- planning --------------------------------------------------------------------------------
    def group_spec(self) -> dict[str, Any]:
        regions = [self.cfg.region, *[r for r in self.cfg.region_fallbacks if r != self.cfg.region]]
        promote = self._registry(self.cfg.promote_from)[0] if self.cfg.promote_from else None
        return {"image_inputs": self.inputs_digest, "cpu": self.size.cpu, "memory_gb": self.size.memory_gb,
                "port": self.cfg.port, "restart_policy": self.cfg.restart_policy, "regions": regions,
                "registry": self.login, "promote_from": promote,
                "pull": f"identity:{self.cfg.identity.rsplit('/', 1)[-1]}" if self.cfg.identity else f"token:{self.token_name}",
                "scoring_key": self.scoring_key.spec_value(), "dns_label": self.label}

    def desired(self) -> list[Resource]:
        spec = self.group_spec()
        return [Resource(type=T_GROUP, name=self.base, spec=spec, key=f"aci:{self.group_id(self.base).lower()}")]

    def version_of(self, spec: dict[str, Any]) -> str:
        return digest(spec, 8)

    @cached_property
    def aci(self) -> Any:
        from azure.mgmt.containerinstance import ContainerInstanceManagementClient

        return ContainerInstanceManagementClient(self.session.get_credential(self.cfg.subscription),
                                                 self.cfg.subscription, **self.session.client_kwargs())

    def _groups(self) -> list[Any]:
        """This target's container groups (by ownership tags), oldest promotion first."""
        try:
            groups = self.op("list container groups",
                             lambda: list(self.aci.container_groups.list_by_resource_group(self.cfg.resource_group)))
        except AzureNotFound:  # no resource group yet: no groups
            groups = []
        mine = [g for g in groups
                if (g.tags or {}).get(TAG_MANIFEST) == self.manifest.name and (g.tags or {}).get(TAG_TARGET) == self.cfg.name]
        return sorted(mine, key=lambda g: int((g.tags or {}).get(TAG_PROMOTED) or 0))

    def _live(self, groups: list[Any]) -> Any:
        promoted = [g for g in groups if (g.tags or {}).get(TAG_PROMOTED) and not (g.tags or {}).get(TAG_KEPT)]
        return promoted[-1] if promoted else None

    def read(self) -> list[Observed]:
        groups = self._groups()
        live = self._live(groups)
        wanted_version = self.version_of(self.group_spec())
        out: list[Observed] = []
        if live is not None:
            out.append(self._observed(live, self.base))
        for g in groups:
            tags = g.tags or {}
            if g is live or tags.get(TAG_KEPT):
                continue
            if not tags.get(TAG_PROMOTED) and tags.get(TAG_VERSION) == wanted_version:
                continue  # a start of this very version that was interrupted: the apply reuses it
            out.append(self._observed(g, g.name, stray=True))
        return out

    def _observed(self, g: Any, name: str, *, stray: bool = False) -> Observed:
        tags = dict(g.tags or {})
        spec = spec_from_tags(tags)
        return Observed(type=T_GROUP, name=name, spec=spec, tags=tags, key=f"aci:{str(g.id).lower()}",
                        version=tags.get(TAG_VERSION),
                        on_delete=("a group left by an interrupted or superseded version" if stray else None))

    def check(self, changes: list[Change]) -> list[Finding]:
        out: list[Finding] = []
        if not any(c.type == T_GROUP and c.action in (Action.create, Action.update, Action.replace) for c in changes):
            return out
        out.append(Finding(severity=Severity.info, message=f"container group size {self.size.why}"))
        out.append(Finding(severity=Severity.info, message=URI_NOTE))
        from orchestrator.images.choose import image_path

        out.append(Finding(severity=Severity.info, message=image_path(self.image_inputs)))
        if self.cfg.promote_from:
            out.append(Finding(severity=Severity.info, message=(
                f"image built in {self._registry(self.cfg.promote_from)[0]} and imported by digest into "
                f"{self._registry(self.cfg.registry)[0]} (no pull or push through this machine)")))
        out += self._registry_findings()
        if self.ctx.options.skip_quota_check:
            out.append(Finding(severity=Severity.warning, message=f"quota check skipped ({self.size.cpu} ACI cores needed)"))
            return out
        usage = self._cores_usage(self.cfg.region)
        # the new group runs beside the live one until its smoke test passes: it needs its cores on top
        why = quota.quota_shortfall(self.size.cpu, usage)
        demand = quota.QuotaDemand(self.cfg.subscription, self.cfg.region, usage.family if usage else "aci-cores",
                                   self.size.cpu, 0, usage.current if usage else 0, usage.limit if usage else 0)
        if why:
            out.append(Finding(severity=Severity.error, message=f"quota in {self.cfg.region}: {why}",
                               hint="request more Container Instances cores, free some, or add region_fallbacks",
                               data=demand.as_data()))
        elif usage is not None:
            out.append(Finding(severity=Severity.info, message=f"quota in {self.cfg.region}: {self.size.cpu} cores "
                               f"needed, {usage.free} free", data=demand.as_data()))
        return out

    def _registry_findings(self) -> list[Finding]:
        """Each registry the apply uses must exist (deployctl builds into it, it does not create it)."""
        refs = [self.cfg.registry] + ([self.cfg.promote_from] if self.cfg.promote_from else [])
        return registries.missing_findings(self.session, self.op, [self._registry(ref) for ref in refs])

    def _cores_usage(self, region: str) -> quota.Usage | None:
        rows = self.op("list ACI usage", lambda: list(self.aci.location.list_usage(region)))
        for u in rows:
            name = getattr(getattr(u, "name", None), "value", None)
            if isinstance(name, str) and name.lower() == "standardcores":
                return quota.Usage(family="ACI StandardCores", current=int(u.current_value or 0), limit=int(u.limit or 0))
        return None

    # -- writing ---------------------------------------------------------------------------------
    def create(self, resource: Resource, tags: Any) -> None:
        self._roll_out(resource, tags)

    def update(self, resource: Resource, observed: Observed, tags: Any) -> None:
        self._roll_out(resource, tags)

    def delete(self, observed: Observed) -> None:
        if observed.name != self.base:  # a stray: only that group
            self._delete_group(observed.key.split("/")[-1])
            return
        for g in self._groups():  # the live version, and every other group of this target
            self._delete_group(g.name)
        if not self.cfg.identity:
            self._delete_token()

    def _delete_group(self, name: str) -> None:
        try:
            self.op(f"delete container group {name}", lambda: self.aci.container_groups.begin_delete(
                self.cfg.resource_group, name).result(), resource=self.group_id(name))
        except AzureNotFound:
            pass  # already gone

    def _roll_out(self, resource: Resource, tags: Any) -> None:
        spec = dict(resource.spec)
        key = self.scoring_key.ensure()
        spec["scoring_key"] = ScoringKey.fingerprint(key)  # the key made now, or the one the plan saw
        tags = {**tags, TAG_SPEC: spec_hash(spec)}
        version = self.version_of(spec)
        name = limits.group_name(self.base, version)
        previous = self._groups()
        image = self._image()
        credentials, identity = self._pull_credentials()
        group_tags = self.azure_tags(tags, {**spec_tags(spec), TAG_VERSION: version})
        region = self._create_group(name, image, key, credentials, identity, group_tags, spec["regions"], version)
        fqdn = self._wait_ready(name)
        uri = f"http://{fqdn}:{self.cfg.port}/score"
        why = self._smoke_test(uri, key)
        if why:
            self.ctx.progress(f"smoke test of {name} failed: deleting it; the previous version keeps serving")
            self._delete_group(name)
            raise self.fail(f"the new version ({name} in {region}) failed its smoke test: {why}",
                            hint="see `deployctl logs` output above; fix the scoring script or the model and apply again")
        import time

        self._tag(name, {**group_tags, TAG_PROMOTED: str(time.time_ns())})
        self.ctx.progress(f"{name} is live at {uri}")
        for g in previous:
            if g.name == name:
                continue
            if self.cfg.keep_previous and g is self._live(previous):
                self._tag(g.name, {**(g.tags or {}), TAG_KEPT: "true"})
                continue
            self.ctx.progress(f"deleting the previous group {g.name}")
            self._delete_group(g.name)

    def _image(self) -> str:
        """The image by digest in ``registry``: built there, or built in ``promote_from`` and imported."""
        from orchestrator.images.choose import image_for

        source = self.cfg.promote_from or self.cfg.registry
        src_name, src_sub, src_rg = self._registry(source)
        built = self.op("build and push the image", lambda: image_for(
            self.image_inputs, self.session, registry=src_name, subscription=src_sub, resource_group=src_rg,
            repository=self.repository, progress=self.ctx.progress))
        if self.cfg.promote_from is None:
            return str(built.image)
        from orchestrator.images.promote import promote_image, registry_id

        name, sub, rg = self._registry(self.cfg.registry)
        self.ctx.progress(f"importing {built.digest[:19]} into {name} by digest")
        return str(self.op("import the image", lambda: promote_image(
            self.session, built.image, source_registry_id=registry_id(src_sub, src_rg, src_name),
            subscription=sub, resource_group=rg, registry=name)))

    @cached_property
    def acr(self) -> Any:
        from azure.mgmt.containerregistry import ContainerRegistryManagementClient

        _, sub, _ = self._registry(self.cfg.registry)
        return ContainerRegistryManagementClient(self.session.get_credential(sub), sub, **self.session.client_kwargs())

    def _pull_credentials(self) -> tuple[list[Any], Any]:
        """(imageRegistryCredentials, identity): the user's identity, or a fresh password of our
        repository-scoped pull token (the group keeps it; admin credentials are never used)."""
        from azure.mgmt.containerinstance import models as m

        if self.cfg.identity:
            identity = m.ContainerGroupIdentity(type="UserAssigned", user_assigned_identities={self.cfg.identity: m.UserAssignedIdentities()})
            return [m.ImageRegistryCredential(server=self.login, identity=self.cfg.identity)], identity
        from azure.mgmt.containerregistry import models as r

        name, sub, rg = self._registry(self.cfg.registry)
        scope_map = f"/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.ContainerRegistry/registries/{name}/scopeMaps/{TOKEN_SCOPE_MAP}"
        token = self.op("create the pull token", lambda: self.acr.tokens.begin_create(
            rg, name, self.token_name, r.Token(properties=r.TokenProperties(scope_map_id=scope_map, status="enabled"))).result())
        creds = self.op("make a pull token password", lambda: self.acr.registries.begin_generate_credentials(
            rg, name, r.GenerateCredentialsParameters(token_id=token.id, name="password1")).result())
        password = creds.passwords[0].value
        self.ctx.secret(password)
        return [m.ImageRegistryCredential(server=self.login, username=creds.username or self.token_name,
                                          password=password)], None

    def _delete_token(self) -> None:
        name, _, rg = self._registry(self.cfg.registry)

        try:
            self.op("delete the pull token", lambda: self.acr.tokens.begin_delete(rg, name, self.token_name).result())
        except AzureNotFound:
            pass  # already gone

    def _put_group(self, name: str, group: Any) -> Any:
        return self.aci.container_groups.begin_create_or_update(self.cfg.resource_group, name, group).result()

    def _create_group(self, name: str, image: str, key: str, credentials: list[Any], identity: Any,
                      tags: dict[str, str], regions: list[str], version: str) -> str:
        """Create the group in the first region with capacity; returns that region.  A region that
        fails leaves nothing behind: its group is deleted before the next region is tried."""
        from azure.mgmt.containerinstance import models as m

        port = self.cfg.port
        probe = m.ContainerProbe(http_get=m.ContainerHttpGet(path="/", port=port, scheme="http"),
                                 initial_delay_seconds=5, period_seconds=10, failure_threshold=3, timeout_seconds=5)
        container = m.Container(
            name=CONTAINER, image=image,
            resources=m.ResourceRequirements(requests=m.ResourceRequests(cpu=self.size.cpu, memory_in_gb=self.size.memory_gb)),
            ports=[m.ContainerPort(port=port, protocol="TCP")],
            environment_variables=[m.EnvironmentVariable(name="PORT", value=str(port)),
                                   m.EnvironmentVariable(name=KEY_ENV, secure_value=key)],
            readiness_probe=probe, liveness_probe=probe)
        errors: list[str] = []
        for region in regions:
            group = m.ContainerGroup(
                location=region, containers=[container], os_type="Linux", restart_policy=self.cfg.restart_policy,
                image_registry_credentials=credentials, identity=identity, tags=tags,
                ip_address=m.IpAddress(type="Public", ports=[m.Port(port=port, protocol="TCP")],
                                       dns_name_label=f"{self.label}-{version}"[:63]))
            self.ctx.progress(f"creating container group {name} in {region} ({self.size.cpu} vCPU, {self.size.memory_gb:g} GB)")
            try:
                self.op(f"create container group {name}", functools.partial(self._put_group, name, group), resource=self.group_id(name))
                return region
            except Exception as e:
                code = error_code(e) or getattr(e, "code", None)
                self._delete_group(name)  # a failed create must not leave a group behind
                if limits.is_capacity_error(code, str(e)) and region != regions[-1]:
                    self.ctx.warn(f"{region} cannot take the group now ({describe(e)}); trying the next region")
                    errors.append(f"{region}: {describe(e)}")
                    continue
                raise self.fail(f"container group {name} could not be created in {region}: {describe(e)}"
                                + (f" (before: {'; '.join(errors)})" if errors else ""),
                                hint=self._hint(code, str(e))) from e
        raise self.fail("no region could take the container group")  # unreachable: the last region raises

    @staticmethod
    def _hint(code: str | None, text: str) -> str:
        c, t = (code or "").lower(), text.lower()
        if "inaccessibleimage" in c or "pull" in t:
            return "the group could not pull the image: check the identity's AcrPull role or the registry name"
        if "dnsnamelabel" in c or "dns" in t:
            return "set another dns_label: this one is taken in the region"
        if "port" in t:
            return "each container port must be distinct and match the group's ports"
        if limits.is_capacity_error(code, text):
            return "add region_fallbacks, or retry later"
        return "see the service's message above"

    def _tag(self, name: str, tags: dict[str, str]) -> None:
        from azure.mgmt.containerinstance import models as m

        self.op(f"tag container group {name}", lambda: self.aci.container_groups.update(
            self.cfg.resource_group, name, m.Resource(tags=tags)), resource=self.group_id(name))

    def _wait_ready(self, name: str) -> str:
        """Wait until the group runs and its health route answers; returns its FQDN."""
        from orchestrator.azure.http import request_json

        waited = 0.0
        last = "not started"
        while waited < READY_TIMEOUT_S:
            if self.ctx.cancel.is_set():
                raise self.fail(f"interrupted while {name} was starting")
            g = self.op(f"read container group {name}", lambda: self.aci.container_groups.get(self.cfg.resource_group, name))
            state = (g.instance_view.state if g.instance_view else None) or g.provisioning_state
            fqdn = g.ip_address.fqdn if g.ip_address else None
            if state in ("Failed", "Stopped") or self._terminated(g):
                logs = self._logs(name, 30)
                self._delete_group(name)
                raise self.fail(f"container group {name} did not start ({self._terminated(g) or state})"
                                + (f"; its log:\n{logs}" if logs else ""),
                                hint="an image without deployctl's runtime, or a scoring script whose init() fails")
            if fqdn and state == "Running":
                try:
                    status, _, _ = request_json(self.session, "GET", f"http://{fqdn}:{self.cfg.port}/", timeout_s=10)
                    if status == 200:
                        return str(fqdn)
                    last = f"health route answered {status}"
                except Exception as e:  # not listening yet
                    last = describe(e)
            self.sleep(5.0)
            waited += 5.0
        self._delete_group(name)
        raise self.fail(f"container group {name} was not ready after {READY_TIMEOUT_S:.0f} s ({last})")

    @staticmethod
    def _terminated(g: Any) -> str | None:
        for c in g.containers or []:
            view = getattr(c, "instance_view", None)
            cur = getattr(view, "current_state", None) if view else None
            if cur is not None and cur.state == "Terminated" and (getattr(view, "restart_count", 0) or 0) >= 1:
                return f"container exited with code {cur.exit_code}: {cur.detail_status or ''}".strip(": ")
        return None

    def _smoke_test(self, uri: str, key: str) -> str | None:
        sample = self.manifest.scoring.sample_request
        if sample is None:
            return None
        from orchestrator.azure.scoring import score

        status, body, _ = score(self.session, uri, key, Path(sample).read_bytes())
        return None if status == 200 else f"HTTP {status}: {str(body)[:300]}"

    # -- using -----------------------------------------------------------------------------------
    def _live_group(self) -> Any:
        live = self._live(self._groups())
        if live is None:
            raise self.fail("nothing is deployed for this target", hint="run deployctl apply first")
        return live

    def outputs(self, observed: list[Observed]) -> dict[str, Any]:
        if not any(o.name == self.base for o in observed):
            return {}
        g = self._live_group()
        fqdn = g.ip_address.fqdn if g.ip_address else None
        return {"scoring_uri": f"http://{fqdn}:{self.cfg.port}/score" if fqdn else None, "group": g.name,
                "region": g.location, "image": g.containers[0].image if g.containers else None,
                "cpu": self.size.cpu, "memory_gb": self.size.memory_gb,
                "state": g.instance_view.state if g.instance_view else g.provisioning_state, "note": URI_NOTE}

    def secrets(self, observed: list[Observed]) -> dict[str, str]:
        key = self.scoring_key.read()
        return {"key": key} if key else {}

    def invoke(self, request: InvokeRequest) -> InvokeResult:
        from orchestrator.azure.scoring import score

        if request.run_async or request.request_id:
            raise self.fail("aci serves real-time scoring only", hint="use a functions or local target for --async")
        g = self._live_group()
        key = self.scoring_key.read()
        if key is None:
            raise self.fail(f"the scoring key is not in {self.scoring_key.file}", hint="apply from this machine (it rotates the key)")
        uri = f"http://{g.ip_address.fqdn}:{self.cfg.port}/score"
        status, body, _ = score(self.session, uri, key, request.body, timeout_s=request.timeout_s)
        return InvokeResult(ok=status == 200, status_code=status, body=body, details={"scoring_uri": uri})

    def _logs(self, name: str, tail: int) -> str:
        try:
            return str(self.aci.containers.list_logs(self.cfg.resource_group, name, CONTAINER, tail=tail).content or "")
        except Exception:  # a group that is gone has no logs: the caller says what happened
            return ""

    def logs(self, tail: int = 100, deployment: str | None = None) -> str:
        return self._logs(deployment or self._live_group().name, tail)
