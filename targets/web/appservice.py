"""The ``app-service`` target: an App Service Linux web app serving the model through deployctl's
runtime (the Azure ML contract and the key check of ``local``), from the image or from a package.

Resources, in order: for ``run: image`` without a named registry or identity, those deployctl
makes and owns — the registry (:mod:`orchestrator.azure.registries`), a user-assigned identity and
its AcrPull role assignment on the registry (:mod:`orchestrator.azure.roles`), so the grant exists
before the site first pulls — then the plan (B1..P3v3, sized from the model: :mod:`.appservice_config`), the
app (site config, health check path, always-on, the start time limit, app settings with the
scoring key) and the version (what runs: ``DOCKER|<image by digest>`` pulled with a managed
identity, or a zip package built here — uv for the platform — run from package with the runtime
as startup command, never a remote Oryx build).

Deploying a version, with a staging slot (Standard and Premium): the slot gets the new version
and production's settings, is warmed up and smoke-tested on its own host name
(``<app>-staging.azurewebsites.net``), then swapped into production; production is health-checked
and, on failure, swapped back.  Without slots (Basic, or ``staging_slot: false``): in place, and
on failure the previous image (or the previous package, kept in the target's state folder by its
sha256) is put back.  The version's record is the production app setting ``DEPLOYCTL_VERSION``.

The scoring key: :mod:`orchestrator.azure.keys` (the state folder, ``DEPLOYCTL_SCORING_KEY`` as an
app setting, checked by the runtime).
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator import sizing
from orchestrator.azure import quota, registries, roles
from orchestrator.azure.budgets import PROVISION
from orchestrator.azure.errors import AzureNotFound, AzureOperationError
from orchestrator.azure.keys import KEY_ENV, ScoringKey
from orchestrator.lazy import cached_property
from orchestrator.manifest.model import ScoringType
from orchestrator.packaging import tree_digest, tree_size
from orchestrator.plan import Action, Change, digest, spec_hash
from orchestrator.state import write_atomic
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
from targets.web import package, webapps
from targets.web.appservice_config import BY_NAME, AppServiceConfig, PlanChoice, choose_plan, start_time_limit
from targets.web.base import WebTarget

T_PLAN, T_APP, T_VERSION = "app-service-plan", "app-service", "app-service-version"
# run: image without a named registry / identity: deployctl makes (and owns) what the pull needs
T_REGISTRY, T_IDENTITY, T_PULL = "container-registry", "managed-identity", "role-assignment"
IDENTITY_TYPE = "Microsoft.ManagedIdentity/userAssignedIdentities"
INIT_HEADER = "x-deployctl-init-seconds"  # the runtime's own measure of init() (deployctl_runtime.server)


@dataclass(frozen=True)
class Started:
    """How a version started: seconds from deploy to the first healthy answer, and init()'s own
    seconds as the runtime reported them on that answer (None: it did not say)."""

    start_s: float
    init_s: float | None


def init_seconds(headers: Mapping[str, str]) -> float | None:
    value = next((v for k, v in headers.items() if k.lower() == INIT_HEADER), None)
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None
SLOT = "staging"
RECORD = "DEPLOYCTL_VERSION"
WWWROOT = "/home/site/wwwroot"  # where run-from-package mounts the zip
RUNTIME_COMMAND = "python -m deployctl_runtime.container"
IDENTITY_API = "2023-01-31"  # Microsoft.ManagedIdentity/userAssignedIdentities


class AppServiceTarget(WebTarget):
    kind = "app-service"
    scoring_types = frozenset({ScoringType.real_time})
    config_model = AppServiceConfig
    description = "Azure App Service (Linux): deployctl's image or a package, blue/green through a staging slot"

    @property
    def cfg(self) -> AppServiceConfig:
        assert isinstance(self.config, AppServiceConfig)
        return self.config

    # -- sizes and inputs (pure; names, ids, requirements: WebTarget) ----------------------------
    @cached_property
    def model_bytes(self) -> int:
        return tree_size(self.manifest.model.path) if self.manifest.model.path else 0

    @cached_property
    def plan_choice(self) -> PlanChoice:
        r = self.manifest.resources
        if self.manifest.model.path is None:
            raise self.fail("the app-service target ships the model with the app: give model.path")
        req = sizing.requirement(model_bytes=self.model_bytes, cpu=r.cpu, memory_gib=r.memory_gb, gpu=r.gpu,
                                 requirement_lines=self.requirements)
        if req.gpu:
            raise self.fail("App Service has no GPUs: use an Azure ML target (online-endpoint, aks) for a GPU model")
        try:
            return choose_plan(self.cfg, req.memory_gib, req.cpu, reasons="; ".join(req.reasons))
        except ValueError as e:
            raise self.fail(str(e), hint="set sku / staging_slot, or resources.memory_gb") from None

    @property
    def init_file(self) -> Path:
        """The longest init() the runtime reported (seconds): what the next start limit is sized from."""
        return self.ctx.state_dir / "init-seconds"

    def _measured_init(self) -> float | None:
        try:
            return float(self.init_file.read_text())
        except (OSError, ValueError):
            return None

    @cached_property
    def start_limit(self) -> tuple[int, str]:
        return start_time_limit(self.cfg, self._measured_init(), self.model_bytes)

    @cached_property
    def scoring_key(self) -> ScoringKey:
        return ScoringKey(self.ctx)

    # -- what the image pull needs: the registry, the identity, its AcrPull (named, or deployctl's) --
    def _registry(self) -> tuple[str, str, str]:
        """(name, subscription, resource group) of the registry the image goes to: the one named,
        else the one deployctl makes for this target."""
        if self.cfg.registry is None:
            return (registries.default_name(self.cfg.subscription, self.cfg.resource_group, self.app_name),
                    self.cfg.subscription, self.cfg.resource_group)
        return registries.resolve(self.cfg.registry, self.cfg.subscription, self.cfg.resource_group)

    @property
    def registry_scope(self) -> str:
        return registries.registry_id(*[self._registry()[i] for i in (1, 2, 0)])

    @property
    def identity_name(self) -> str:
        return str(self.cfg.identity).rsplit("/", 1)[-1] if self.cfg.identity else f"{self.app_name}-pull"

    @property
    def pull_identity(self) -> str:
        """The ARM id of the identity the app pulls with: the one named, else deployctl's."""
        return self.cfg.identity or self.arm_id(IDENTITY_TYPE, self.identity_name)

    @property
    def makes_pull_role(self) -> bool:
        """deployctl grants AcrPull when it made the registry or the identity (a named pair is the
        user's: its role assignment too)."""
        return self.cfg.registry is None or self.cfg.identity is None

    def _pull_resources(self) -> list[Resource]:
        if self.cfg.run != "image":
            return []
        name, _, _ = self._registry()
        out = []
        if self.cfg.registry is None:
            out.append(Resource(T_REGISTRY, name, {"location": self.cfg.region, "sku": registries.DEFAULT_SKU},
                                key=self.registry_scope, replace_on=("location",)))
        if self.cfg.identity is None:
            out.append(Resource(T_IDENTITY, self.identity_name, {"location": self.cfg.region}, key=self.pull_identity,
                                replace_on=("location",)))
        if self.makes_pull_role:  # (run: image here)
            deps = tuple(f"{r.type}/{r.name}" for r in out)
            out.append(Resource(T_PULL, f"acrpull-{self.identity_name}",
                                {"role": "AcrPull", "registry": name, "identity": self.identity_name},
                                key=f"{self.registry_scope}/acrpull/{self.identity_name}", depends_on=deps))
        return out

    def _identity_doc(self) -> dict[str, Any] | None:
        from orchestrator.azure.arm import arm_get

        ident = self.pull_identity
        sub = ident.split("/")[2]
        try:
            doc = self.op("read the pull identity", lambda: arm_get(self.session, self.session.get_credential(sub),
                                                                    ident, IDENTITY_API))
        except AzureNotFound:
            return None
        return dict(doc or {})

    def _read_pull(self) -> list[Observed]:
        """The registry, identity and role assignment deployctl made (as they are now) — read in
        ``run: package`` too, so that those an earlier ``run: image`` made are deleted, not leaked."""
        out = []
        name, sub, rg = self._registry()
        if self.cfg.registry is None:
            reg = self.op("read the registry", lambda: registries.observe(self.session, sub, rg, name))
            if reg is not None:
                out.append(Observed(T_REGISTRY, name, {"location": reg["location"], "sku": reg["sku"]},
                                    tags=reg["tags"], key=self.registry_scope))
        ident = self._identity_doc() if self.makes_pull_role else None
        if ident is not None and self.cfg.identity is None:
            out.append(Observed(T_IDENTITY, self.identity_name,
                                {"location": webapps.norm_location(ident.get("location"))},
                                tags=ident.get("tags") or {}, key=self.pull_identity))
        principal = str((ident or {}).get("properties", {}).get("principalId") or "")
        if principal:
            scope = self.registry_scope
            ra = self.op("read the AcrPull role assignment", lambda: roles.get(
                self.session, sub, scope, roles.assignment_name(scope, principal, roles.ACR_PULL)))
            if ra is not None:
                role = "AcrPull" if str(ra["roleDefinitionId"]).rsplit("/", 1)[-1] == roles.ACR_PULL else ra["roleDefinitionId"]
                out.append(Observed(T_PULL, f"acrpull-{self.identity_name}",
                                    {"role": role, "registry": str(ra["scope"]).rsplit("/", 1)[-1].lower(),
                                     "identity": self.identity_name},
                                    tags=roles.owner_tags(ra.get("description")),
                                    key=f"{scope}/acrpull/{self.identity_name}"))
            elif roles.PULL_ROLES & self.op("read the identity's roles on the registry", lambda: roles.roles_of(
                    self.session, sub, scope, principal)):
                # pulling is already granted, under another name or at a wider scope (by hand): that
                # is the state this resource wants, so the plan is a no-op, not a create forever; a
                # delete removes only deployctl's own assignment (by its name), never that grant
                spec = {"role": "AcrPull", "registry": name, "identity": self.identity_name}
                out.append(Observed(T_PULL, f"acrpull-{self.identity_name}", spec,
                                    tags={TAG_MANIFEST: self.manifest.name, TAG_TARGET: self.config.name,
                                          TAG_SPEC: spec_hash(spec)},
                                    key=f"{scope}/acrpull/{self.identity_name}"))
        return out

    def _create_registry(self, r: Resource, tags: dict[str, str]) -> None:
        _, sub, rg = self._registry()
        self.op("create the registry", lambda: registries.create(self.session, sub, rg, r.name,
                                                                 location=r.spec["location"], tags=tags),
                resource=r.address)

    def _create_identity(self, r: Resource, tags: dict[str, str]) -> None:
        from orchestrator.azure.arm import arm_request

        cred = self.session.get_credential(self.cfg.subscription)
        self.op("create the pull identity", lambda: arm_request(
            self.session, cred, "PUT", self.pull_identity, IDENTITY_API, {"location": r.spec["location"], "tags": tags}),
            resource=r.address)

    def _create_pull_role(self, r: Resource, tags: dict[str, str]) -> None:
        ident = self._identity_doc()
        principal = str((ident or {}).get("properties", {}).get("principalId") or "")
        if not principal:
            raise self.fail(f"the pull identity {self.pull_identity} does not exist", resource=r.address)
        _, sub, _ = self._registry()
        scope = self.registry_scope
        # a new identity's principal takes a while to replicate: PrincipalNotFound is retried (PROVISION budget)
        self.op("grant AcrPull on the registry", lambda: roles.assign(
            self.session, sub, scope, principal, roles.ACR_PULL, description=roles.describe_owner(tags)),
            resource=r.address, budget=PROVISION)

    def _delete_pull(self, observed: Observed) -> None:
        from orchestrator.azure.arm import arm_request

        _, sub, rg = self._registry()
        if observed.type == T_PULL:
            ident = self._identity_doc()
            principal = str((ident or {}).get("properties", {}).get("principalId") or "")
            if principal:
                scope = self.registry_scope
                self.op("delete the AcrPull role assignment", lambda: roles.delete(
                    self.session, sub, scope, roles.assignment_name(scope, principal, roles.ACR_PULL)))
        elif observed.type == T_IDENTITY:
            cred = self.session.get_credential(self.cfg.subscription)
            self.op("delete the pull identity", lambda: webapps.get_or_none(lambda: arm_request(
                self.session, cred, "DELETE", self.pull_identity, IDENTITY_API)))
        else:
            self.op("delete the registry", lambda: registries.delete(self.session, sub, rg, observed.name))

    @cached_property
    def version_digest(self) -> str:
        """What the version is made of, by content: the image's or the package's inputs."""
        from orchestrator.images.build import RUNTIME_SRC, ImageInputs

        i = ImageInputs.from_manifest(self.manifest)
        parts = {"run": self.cfg.run, "python": i.python, "requirements": list(i.requirements), "entry": i.entry,
                 "base": i.base if self.cfg.run == "image" else None, "variables": dict(i.variables),
                 "code": tree_digest(i.code), "model": tree_digest(i.model) if i.model else None,
                 "runtime": tree_digest(RUNTIME_SRC), "platform": package.PLATFORM}
        if self.cfg.run == "image" and i.dockerfile is not None:
            parts["dockerfile"] = i.dockerfile_content
        return digest(parts)

    def managed_settings(self) -> dict[str, str]:
        """App settings deployctl manages that are not secret (they are in the spec and the plan)."""
        out = {"WEBSITES_PORT": str(self.cfg.port), "PORT": str(self.cfg.port), "WORKER_COUNT": str(self.cfg.workers),
               "WEBSITES_CONTAINER_START_TIME_LIMIT": str(self.start_limit[0]),
               "SCM_DO_BUILD_DURING_DEPLOYMENT": "false"}
        if self.cfg.run == "package":
            out.update({"WEBSITE_RUN_FROM_PACKAGE": "1", "DEPLOYCTL_ENTRY": self.manifest.code.entry,
                        "DEPLOYCTL_CODE_DIR": f"{WWWROOT}/code", "AZUREML_MODEL_DIR": f"{WWWROOT}/model",
                        "PYTHONPATH": f"{WWWROOT}:{WWWROOT}/{package.SITE_PACKAGES}",
                        **dict(self.manifest.environment.variables)})
        return {**out, **self.cfg.app_settings}

    # -- planning ---------------------------------------------------------------------------------
    def desired(self) -> list[Resource]:
        region, choice = self.cfg.region, self.plan_choice
        app_spec: dict[str, Any] = {
            "location": region, "plan": self.plan_name, "run": self.cfg.run, "health_check_path": self.cfg.health_check_path,
            "always_on": self.cfg.always_on, "startup_command": self._startup_command(),
            "identity": self.pull_identity if self.cfg.run == "image" else None, "settings": self.managed_settings(),
            "scoring_key": self.scoring_key.spec_value()}
        pull = self._pull_resources()
        return [
            *pull,
            Resource(T_PLAN, self.plan_name, {"location": region, "sku": choice.sku.name},
                     key=self.plan_id(), replace_on=("location",)),
            Resource(T_APP, self.app_name, app_spec, key=self.site_id(),
                     depends_on=(f"{T_PLAN}/{self.plan_name}", *(f"{r.type}/{r.name}" for r in pull if r.type == T_PULL)),
                     replace_on=("location",), exact=("settings",)),
            Resource(T_VERSION, self.app_name, {"run": self.cfg.run, "digest": self.version_digest,
                                                "staging_slot": choice.slot},
                     key=self.site_id() + "/version", depends_on=(f"{T_APP}/{self.app_name}",)),
        ]

    def _startup_command(self) -> str:
        return "" if self.cfg.run == "image" else (self.cfg.startup_command or RUNTIME_COMMAND)

    def check(self, changes: list[Change]) -> list[Finding]:
        choice = self.plan_choice
        out = [Finding(severity=Severity.info, message=f"plan: {choice.why}"),
               Finding(severity=Severity.info, message=f"start time limit {self.start_limit[0]} s "
                       f"(WEBSITES_CONTAINER_START_TIME_LIMIT): {self.start_limit[1]}")]
        if choice.slot:
            out.append(Finding(severity=Severity.info, message=f"blue/green: a new version goes to the {SLOT} slot, is "
                               "warmed up and smoke-tested on its own host name, then swapped into production"))
        else:
            why = (f"the {choice.sku.tier} tier has no deployment slots" if not choice.sku.slots
                   else "staging_slot: false")
            out.append(Finding(severity=Severity.warning, message=f"no blue/green ({why}): a new version replaces the "
                               "running one in place (a short interruption); on failure the previous version is put back"))
        if self.manifest.scoring.sample_request is None:
            out.append(Finding(severity=Severity.warning, message="no scoring.sample_request: a new version is only "
                               "health-checked, not smoke-tested"))
        if self.cfg.run == "image":
            out.append(Finding(severity=Severity.info, message=self._pull_summary()))
        if not any(c.action in (Action.create, Action.update, Action.replace) for c in changes):
            return out  # nothing will be written: no pre-write checks
        if self.cfg.run == "image":
            from orchestrator.images.build import ImageInputs
            from orchestrator.images.choose import image_path

            out.append(Finding(severity=Severity.info, message=image_path(ImageInputs.from_manifest(self.manifest))))
            if self.cfg.registry is not None:
                out += registries.missing_findings(self.session, self.op, [self._registry()])
            if self.cfg.identity:
                try:
                    _ = self.identity_client_id
                except AzureNotFound:
                    out.append(Finding(severity=Severity.error, message=f"identity {self.cfg.identity} does not exist",
                                       hint="create it and give it AcrPull on the registry, or fix `identity`"))
                else:
                    out += self._named_pull_findings()
        out += self._region_findings(choice)
        out += self._quota_findings(choice, changes)
        return out

    def _named_pull_findings(self) -> list[Finding]:
        """A named identity with a named registry: does it hold a role that can pull there (at the
        registry or above)?  A warning, not an error: a custom role may grant the pull."""
        if self.makes_pull_role:
            return []
        principal = str(((self._identity_doc() or {}).get("properties") or {}).get("principalId") or "")
        scope, sub = self.registry_scope, self._registry()[1]
        try:
            held = self.op("list the identity's roles on the registry",
                           lambda: roles.roles_of(self.session, sub, scope, principal))
        except AzureOperationError as e:  # no right to read role assignments: say so, do not block
            return [Finding(severity=Severity.warning, message=f"could not read the roles of {self.identity_name} on "
                            f"registry {self._registry()[0]} ({e.message})")]
        if held & roles.PULL_ROLES:
            return []
        return [Finding(severity=Severity.warning, message=f"identity {self.identity_name} holds no AcrPull (nor "
                        f"AcrPush, Contributor, Owner) on registry {self._registry()[0]}: the app's image pull will fail "
                        "unless a custom role grants it", hint=f"az role assignment create --role AcrPull --assignee-"
                        f"object-id {principal} --assignee-principal-type ServicePrincipal --scope {scope}")]

    def _pull_summary(self) -> str:
        name = self._registry()[0]
        reg = (f"registry {name} (created by deployctl, Basic)" if self.cfg.registry is None
               else f"registry {name} (named)")
        ident = (f"user-assigned identity {self.identity_name} (created by deployctl)" if self.cfg.identity is None
                 else f"identity {self.identity_name} (named)")
        role = ("an AcrPull role assignment for it on the registry (created by deployctl)" if self.makes_pull_role
                else "its AcrPull role on the registry (yours to grant)")
        return f"image pull: {reg}; the app pulls with {ident} through {role}"

    def _quota_findings(self, choice: PlanChoice, changes: list[Change]) -> list[Finding]:
        """Before any write: the subscription's App Service cores in the region (Microsoft.Web
        ``locations/{region}/usages``, GetUsagesInLocation) must hold the plan being made or resized."""
        plan = next((c for c in changes if c.type == T_PLAN and c.action in (Action.create, Action.update,
                                                                             Action.replace)), None)
        if plan is None or self.ctx.options.skip_quota_check:
            return []
        held = 0  # the cores of the plan being resized, given back by the resize
        if plan.action == Action.update:
            before = next((d.before for d in plan.diff if d.path == "sku"), choice.sku.name)
            held = BY_NAME[before].vcpus if isinstance(before, str) and before in BY_NAME else 0
        region = self.cfg.region
        rows = self.op("read App Service usage", lambda: list(self.web.get_usages_in_location.list(region)))
        usage = next((quota.Usage("App Service", int(r.current_value or 0), int(r.limit if r.limit is not None else -1))
                      for r in rows if str(getattr(r.name, "value", "") or "").lower().startswith("cores")), None)
        if usage is None or usage.limit < 0:
            return [Finding(severity=Severity.info, message=f"no App Service cores quota reported in {region}")]
        need = choice.sku.vcpus
        demand = quota.QuotaDemand(self.cfg.subscription, region, usage.family, need, held, usage.current, usage.limit)
        short = quota.quota_shortfall(need, usage, already_held=held)
        if short:
            return [Finding(severity=Severity.error, message=f"quota in {region}: the {choice.sku.name} plan {short}",
                            hint="ask for more App Service quota (portal: Quotas), choose a smaller sku, or another "
                                 "region", data=demand.as_data())]
        return [Finding(severity=Severity.info, message=f"App Service cores in {region}: {need} needed, "
                        f"{usage.free + held} free (quota {usage.limit})", data=demand.as_data())]

    def _region_findings(self, choice: PlanChoice) -> list[Finding]:
        """Before any write: does the region offer the plan's tier for Linux?"""
        if self.ctx.options.skip_quota_check:
            return [Finding(severity=Severity.warning, message="region and SKU check skipped")]
        regions = self.op("list regions offering the tier", lambda: list(self.web.list_geo_regions(
            sku=choice.sku.tier, linux_workers_enabled=True)))
        names = {webapps.norm_location(getattr(g, "name", None)) for g in regions}
        if webapps.norm_location(self.cfg.region) not in names:
            return [Finding(severity=Severity.error, message=f"region {self.cfg.region} does not offer {choice.sku.tier} "
                            f"Linux plans ({choice.sku.name})", hint="choose another region or sku "
                            f"(offered in: {', '.join(sorted(names)[:8]) or 'none'})")]
        return [Finding(severity=Severity.info, message=f"{self.cfg.region} offers {choice.sku.tier} Linux plans")]

    def read(self) -> list[Observed]:
        rg = self.cfg.resource_group
        plan = self.observe_plan(T_PLAN)
        out = [*self._read_pull(), *([plan] if plan is not None else [])]
        site = self.op("get web app", lambda: webapps.get_or_none(lambda: self.web.web_apps.get(rg, self.app_name)))
        if site is None:
            return out
        s = webapps.as_dict(site)
        conf = webapps.as_dict(self.op("get site config", lambda: self.web.web_apps.get_configuration(rg, self.app_name)))
        cp = conf.get("properties") or {}
        settings = self.op("list app settings", lambda: webapps.app_settings(self.web, rg, self.app_name))
        key = settings.get(KEY_ENV)
        if key:
            self.ctx.secret(key)
        identities = list((s.get("identity") or {}).get("userAssignedIdentities") or {})
        spec = {"location": webapps.norm_location(s.get("location")),
                "plan": str((s.get("properties") or {}).get("serverFarmId") or "").rsplit("/", 1)[-1],
                "run": "image" if str(cp.get("linuxFxVersion") or "").upper().startswith("DOCKER|") or
                       (cp.get("acrUseManagedIdentityCreds") and not cp.get("appCommandLine")) else "package",
                "health_check_path": cp.get("healthCheckPath"), "always_on": bool(cp.get("alwaysOn")),
                "startup_command": cp.get("appCommandLine") or "",
                "identity": identities[0] if identities else None,
                "settings": {k: v for k, v in settings.items() if k not in (KEY_ENV, RECORD)},
                "scoring_key": ScoringKey.fingerprint(key) if key else "(none)"}
        out.append(Observed(T_APP, self.app_name, spec, tags=s.get("tags") or {}, key=self.site_id()))
        record = json.loads(settings.get(RECORD) or "null")
        if record:
            out.append(Observed(T_VERSION, self.app_name, record["spec"], tags=record["tags"],
                                key=self.site_id() + "/version"))
        return out

    # -- writing ----------------------------------------------------------------------------------
    def create(self, resource: Resource, tags: Mapping[str, str]) -> None:
        all_tags = self.azure_tags(tags)
        {T_PLAN: self._create_plan, T_APP: self._create_app, T_VERSION: self._deploy, T_REGISTRY: self._create_registry,
         T_IDENTITY: self._create_identity, T_PULL: self._create_pull_role}[resource.type](resource, all_tags)

    def update(self, resource: Resource, observed: Observed, tags: Mapping[str, str]) -> None:
        self.create(resource, tags)

    def _create_plan(self, r: Resource, tags: dict[str, str]) -> None:
        sku = self.plan_choice.sku
        body = {"location": r.spec["location"], "kind": "linux", "sku": {"name": sku.name, "tier": sku.tier},
                "tags": tags, "properties": {"reserved": True}}
        self.op("create plan", lambda: self.web.app_service_plans.begin_create_or_update(
            self.cfg.resource_group, r.name, body).result(), resource=r.address)

    def _site_body(self, tags: Mapping[str, str], linux_fx: str | None) -> dict[str, Any]:
        app = next(x for x in self.desired() if x.type == T_APP).spec
        conf: dict[str, Any] = {"alwaysOn": app["always_on"], "healthCheckPath": app["health_check_path"],
                                "appCommandLine": app["startup_command"], "http20Enabled": True}
        if linux_fx:
            conf["linuxFxVersion"] = linux_fx
        body: dict[str, Any] = {"location": app["location"], "kind": "app,linux" + (",container" if self.cfg.run == "image" else ""),
                                "tags": dict(tags), "properties": {"serverFarmId": self.plan_id(),
                                                                   "reserved": True, "httpsOnly": True, "siteConfig": conf}}
        if self.cfg.run == "image":
            body["identity"] = {"type": "UserAssigned", "userAssignedIdentities": {self.pull_identity: {}}}
            conf.update({"acrUseManagedIdentityCreds": True, "acrUserManagedIdentityID": self.identity_client_id})
        return body

    @cached_property
    def identity_client_id(self) -> str:
        """The pull identity's client id (what ``acrUserManagedIdentityID`` takes)."""
        from orchestrator.azure.arm import arm_get

        ident = self.pull_identity
        doc = self.op("read the pull identity", lambda: arm_get(
            self.session, self.session.get_credential(ident.split("/")[2]), ident, IDENTITY_API))
        return str(((doc or {}).get("properties") or {}).get("clientId") or "")

    def _live_fx(self, slot: str | None = None) -> str | None:
        rg = self.cfg.resource_group
        conf = self.op("get site config", lambda: webapps.get_or_none(
            lambda: self.web.web_apps.get_configuration_slot(rg, self.app_name, slot) if slot
            else self.web.web_apps.get_configuration(rg, self.app_name)))
        return (webapps.as_dict(conf).get("properties") or {}).get("linuxFxVersion") if conf is not None else None

    def _create_app(self, r: Resource, tags: dict[str, str]) -> None:
        rg = self.cfg.resource_group
        key = self.scoring_key.ensure()  # made now, or the one the plan saw: the spec tag names it
        tags = {**tags, TAG_SPEC: spec_hash({**r.spec, "scoring_key": ScoringKey.fingerprint(key)})}
        fx = self._live_fx() or (None if self.cfg.run == "image" else f"PYTHON|{self.manifest.environment.python}")
        body = self._site_body(tags, fx)
        self.op("create web app", lambda: self.web.web_apps.begin_create_or_update(rg, r.name, body).result(),
                resource=r.address)
        current = self.op("list app settings", lambda: webapps.app_settings(self.web, rg, r.name))
        settings = {**r.spec["settings"], KEY_ENV: key}
        if RECORD in current:  # the version's record survives an app update
            settings[RECORD] = current[RECORD]
        self.op("set app settings", lambda: webapps.put_app_settings(self.web, rg, r.name, settings), resource=r.address)

    def _build(self) -> tuple[str, bytes | None, str]:
        """(linuxFxVersion, zip bytes or None, what it is) of the version to deploy."""
        if self.cfg.run == "image":
            from orchestrator.images.build import ImageInputs
            from orchestrator.images.choose import image_for

            name, sub, rg = self._registry()
            built = self.op("build and push the image", lambda: image_for(
                ImageInputs.from_manifest(self.manifest), self.session, registry=name, subscription=sub,
                resource_group=rg, repository=f"deployctl/{self.manifest.name}", progress=self.ctx.progress))
            return f"DOCKER|{built.image}", None, str(built.image)
        from targets.local.envs import cache_root

        with tempfile.TemporaryDirectory(prefix="deployctl-appservice-") as tmp:
            sp = package.site_packages(self.requirements, self.manifest.environment.python, cache_root(),
                                       progress=self.ctx.progress) if self.requirements else None
            staged = package.lay_out(Path(tmp) / "pkg", code_dir=self.manifest.code.path,
                                     model_path=self.manifest.model.path, site_packages_dir=sp, runtime_files=None)
            info = package.zip_package(staged, Path(tmp) / "package.zip")
            data = info.path.read_bytes()
        kept = self.ctx.state_dir / "packages" / f"{info.sha256}.zip"
        if not kept.exists():  # the rollback package of the next version
            write_atomic(kept, data)
        return f"PYTHON|{self.manifest.environment.python}", data, f"package {info.sha256[:12]}"

    def _deploy(self, r: Resource, tags: dict[str, str]) -> None:
        rg = self.cfg.resource_group
        settings = self.op("list app settings", lambda: webapps.app_settings(self.web, rg, self.app_name))
        previous = json.loads(settings.get(RECORD) or "null")
        fx, data, what = self._build()
        if r.spec["staging_slot"]:
            start = self._through_slot(r, tags, settings, fx, data, what)
        else:
            start = self._in_place(r, previous, fx, data, what)
        # init() as the runtime measured it (else, a runtime that does not say, the whole start);
        # the longest seen: the limit only grows, so a replan after a quick start changes nothing
        init_s = start.init_s if start.init_s is not None else start.start_s
        write_atomic(self.init_file, f"{max(init_s, self._measured_init() or 0.0):.1f}")
        record = {"spec": dict(r.spec), "tags": tags, "what": what, "linux_fx": fx, "start_s": round(start.start_s, 1),
                  "init_s": None if start.init_s is None else round(start.init_s, 3),
                  "previous": (previous or {}).get("what")}
        if data is not None:
            record["sha256"] = hashlib.sha256(data).hexdigest()
        settings = self.op("list app settings", lambda: webapps.app_settings(self.web, rg, self.app_name))
        settings[RECORD] = json.dumps(record, sort_keys=True)
        self.op("record the version", lambda: webapps.put_app_settings(self.web, rg, self.app_name, settings),
                resource=r.address)

    def _put_version(self, address: str, fx: str, data: bytes | None, slot: str | None) -> None:
        rg = self.cfg.resource_group
        conf = {"properties": {"linuxFxVersion": fx, "appCommandLine": self._startup_command()}}
        self.op("set site config", lambda: self.web.web_apps.update_configuration_slot(rg, self.app_name, slot, conf)
                if slot else self.web.web_apps.update_configuration(rg, self.app_name, conf), resource=address)
        if data is not None:
            cred = self.session.get_credential(self.cfg.subscription)
            scm = f"{self._label(slot)}.scm.azurewebsites.net"
            self.op("zip deploy", lambda: webapps.zip_deploy(self.session, cred, scm, data, sleep=self.sleep),
                    resource=address)

    def _through_slot(self, r: Resource, tags: dict[str, str], settings: Mapping[str, str], fx: str,
                      data: bytes | None, what: str) -> Started:
        rg = self.cfg.resource_group
        self.op("create staging slot", lambda: self.web.web_apps.begin_create_or_update_slot(
            rg, self.app_name, SLOT, self._site_body(tags, fx)).result(), resource=r.address)
        slot_settings = {k: v for k, v in settings.items() if k != RECORD}
        self.op("set slot app settings", lambda: webapps.put_app_settings(self.web, rg, self.app_name, slot_settings,
                                                                          slot=SLOT), resource=r.address)
        self.ctx.progress(f"deploying {what} to the {SLOT} slot")
        self._put_version(r.address, fx, data, SLOT)
        started, problem = self._warm_and_smoke(SLOT)
        if problem:
            kept = ("production was not swapped and still runs the previous version" if RECORD in settings
                    else "nothing was swapped into production")
            raise self.fail(f"the new version failed on the {SLOT} slot: {problem}; {kept}", resource=r.address,
                            hint=self._hint(problem))
        self.ctx.progress(f"{SLOT} slot passed its smoke test: swapping it into production")
        self.op("swap slot", lambda: webapps.swap_into_production(self.web, rg, self.app_name, SLOT), resource=r.address)
        _, problem = self._warm_and_smoke(None)
        if problem:
            self.ctx.progress(f"production failed its health check after the swap ({problem}): swapping back")
            self.op("swap back", lambda: webapps.swap_into_production(self.web, rg, self.app_name, SLOT),
                    resource=r.address)
            raise self.fail(f"production failed its health check after the swap: {problem}; swapped back to the "
                            "previous version", resource=r.address)
        return started

    def _in_place(self, r: Resource, previous: Mapping[str, Any] | None, fx: str, data: bytes | None,
                  what: str) -> Started:
        self.ctx.progress(f"deploying {what} in place (no staging slot)")
        self._put_version(r.address, fx, data, None)
        started, problem = self._warm_and_smoke(None)
        if not problem:
            return started
        restored = ""
        if previous:
            old = None
            if previous.get("sha256"):
                kept = self.ctx.state_dir / "packages" / f"{previous['sha256']}.zip"
                old = kept.read_bytes() if kept.exists() else None
            if old is not None or data is None:
                self.ctx.progress(f"the new version failed ({problem}): putting back {previous.get('what')}")
                self._put_version(r.address, previous["linux_fx"], old, None)
                restored = f"; the previous version ({previous.get('what')}) is back"
        raise self.fail(f"the new version failed: {problem}{restored}", resource=r.address, hint=self._hint(problem))

    @staticmethod
    def _hint(problem: str) -> str:
        p = problem.lower()
        if "pings on port" in p:
            return "the app must listen on the target's `port` (PORT); do not override PORT in app_settings"
        if "startup command" in p or "exited" in p:
            return "the startup command must start deployctl's runtime: python -m deployctl_runtime.container"
        if "pull" in p:
            return "give the identity the AcrPull role on the registry, or fix `registry` / `identity`"
        return "see `deployctl logs`; fix the scoring script or the model and apply again"

    def _warm_and_smoke(self, slot: str | None) -> tuple[Started, str | None]:
        """Warm the app (its health path answers 200 within the start time limit), then score the
        sample request on its own host name; (how long it took to start, problem or None)."""
        from orchestrator.azure.http import request_json

        base = f"https://{self._label(slot)}.azurewebsites.net"
        limit = float(self.start_limit[0])
        t0, waited, last = time.perf_counter(), 0.0, "no answer"
        headers: Mapping[str, str] = {}
        while True:
            if self.ctx.cancel.is_set():
                return Started(0.0, None), "interrupted while the app was starting"
            try:
                status, body, headers = request_json(self.session, "GET", base + self.cfg.health_check_path,
                                                     timeout_s=230)
                if status == 200:
                    break
                last = f"HTTP {status}: {str(body)[:400]}"
            except Exception as e:  # noqa: BLE001 - not answering yet
                last = str(e)[:400]
            if waited >= limit:
                return Started(0.0, None), f"the app did not start within {limit:.0f} s ({last})"
            self.sleep(10.0)
            waited += 10.0
        started = Started(time.perf_counter() - t0 + waited, init_seconds(headers))
        sample = self.manifest.scoring.sample_request
        if sample is None:
            return started, None
        from orchestrator.azure.scoring import score

        t0 = time.perf_counter()
        try:
            status, body, _ = score(self.session, f"{base}/score", self.scoring_key.read(), sample.read_bytes(),
                                    timeout_s=300)
        except Exception as e:  # noqa: BLE001 - any failure of the new version is a failed smoke test
            self.ctx.smoke_tested(False, detail=str(e)[:300])
            return started, f"smoke test: {e}"
        problem = None if status == 200 else f"smoke test: HTTP {status}: {str(body)[:300]}"
        self.ctx.smoke_tested(status == 200, status=status, latency_ms=(time.perf_counter() - t0) * 1000,
                              detail=problem or "")
        return started, problem

    def delete(self, observed: Observed) -> None:
        rg = self.cfg.resource_group
        if observed.type == T_VERSION:  # goes with the app; forget the record if the app stays
            self.forget_setting(RECORD)
        elif observed.type == T_APP:
            self.op("delete web app", lambda: webapps.get_or_none(lambda: self.web.web_apps.delete(
                rg, observed.name, delete_empty_server_farm=False)))
        elif observed.type == T_PLAN:
            self.op("delete plan", lambda: webapps.get_or_none(lambda: self.web.app_service_plans.delete(rg, observed.name)))
        else:
            self._delete_pull(observed)

    # -- using ------------------------------------------------------------------------------------
    def _host(self) -> str:
        site = self.op("get web app", lambda: webapps.get_or_none(
            lambda: self.web.web_apps.get(self.cfg.resource_group, self.app_name)))
        if site is None:
            raise self.fail("nothing is deployed for this target", hint="run deployctl apply first")
        return str((webapps.as_dict(site).get("properties") or {}).get("defaultHostName"))

    def outputs(self, observed: list[Observed]) -> dict[str, Any]:
        if not any(o.type == T_APP for o in observed):
            return {}
        settings = self.op("list app settings", lambda: webapps.app_settings(self.web, self.cfg.resource_group,
                                                                             self.app_name))
        record = json.loads(settings.get(RECORD) or "null") or {}
        return {"scoring_uri": f"https://{self._host()}/score", "app": self.app_name, "run": self.cfg.run,
                "plan_sku": self.plan_choice.sku.name, "version": record.get("what"), "start_s": record.get("start_s"),
                "init_s": record.get("init_s"),
                "staging_slot": self.plan_choice.slot}

    def secrets(self, observed: list[Observed]) -> dict[str, str]:
        key = self.scoring_key.read()
        return {"key": key} if key else {}

    def invoke(self, request: InvokeRequest) -> InvokeResult:
        from orchestrator.azure.scoring import score

        if request.run_async or request.request_id:
            raise self.fail("app-service serves real-time scoring only", hint="use a functions or local target for --async")
        key = self.scoring_key.read()
        if key is None:
            raise self.fail(f"the scoring key is not in {self.scoring_key.file}", hint="apply from this machine")
        body = request.body if request.body is not None else (
            self.manifest.scoring.sample_request.read_bytes() if self.manifest.scoring.sample_request else None)
        uri = f"https://{self._host()}/score"
        status, resp, _ = score(self.session, uri, key, body, timeout_s=request.timeout_s)
        return InvokeResult(ok=status == 200, status_code=status, body=resp, details={"scoring_uri": uri})
