"""The ``functions`` target: an Azure Functions app (Python v2 model) around the unmodified score.py.

Resources, in order: the storage account (host storage, the Flex deployment container, the
request queues and results), the plan (Flex Consumption FC1 by default, Elastic Premium when the
model needs more memory or it is asked for), the function app with its app settings, and the
package (see :mod:`.package`: built here with uv for the platform, zipped, content-addressed).

Deploying a package: upload ``packages/<sha256>.zip`` to the deployment container unless it is
there already, then publish it by URL (OneDeploy).  Premium (real-time and queue): to the
``staging`` slot, smoke-test it there with ``scoring.sample_request``, then swap it into
production (a failing package never takes traffic); a queued app's slot has its queue trigger
disabled by the slot-sticky ``AzureWebJobs.score_queue.Disabled`` setting, so it consumes no
production message before the swap (its smoke test goes over HTTP).  Flex Consumption (no slots)
and Durable apps (both slots would share the task hub): publish in place, smoke-test, and publish
the previous package again when the smoke test fails.  The package's record (input digest, sha256, first answer time) is kept in
the production app settings as ``DEPLOYCTL_PACKAGE``.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import tempfile
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from orchestrator import sizing
from orchestrator.azure.budgets import PROVISION
from orchestrator.lazy import cached_property
from orchestrator.manifest.model import ScoringType
from orchestrator.packaging import tree_size
from orchestrator.plan import Change
from orchestrator.target import (
    Finding,
    InvokeRequest,
    InvokeResult,
    Observed,
    Resource,
    Severity,
)
from targets.web import package, webapps
from targets.web.base import WebTarget
from targets.web.config import (
    COLD_START_BUDGET_S,
    FunctionsConfig,
    Hosting,
    choose_hosting,
    estimate_init_seconds,
)

T_STORAGE, T_PLAN, T_APP, T_PACKAGE = "storage-account", "function-plan", "function-app", "function-package"
DEPLOY_CONTAINER = "deployments"
RESULTS_CONTAINER = "deployctl-results"
REQUEST_QUEUE = "deployctl-requests"
RECORD = "DEPLOYCTL_PACKAGE"
SLOT = "staging"  # Premium: new packages start here, are smoke-tested, then swapped in
QUEUE_DISABLED = "AzureWebJobs.score_queue.Disabled"  # on the staging slot of a queued app (slot-sticky)
# settings holding secrets (connection strings): never in a spec, a plan or an output
SECRET_SETTINGS = ("AzureWebJobsStorage", "DEPLOYMENT_STORAGE_CONNECTION_STRING")


class FunctionsTarget(WebTarget):
    kind = "functions"
    scoring_types = frozenset({ScoringType.real_time, ScoringType.near_real_time})
    config_model = FunctionsConfig
    description = "Azure Functions (Flex Consumption or Premium): HTTP real-time or queue near-real-time"

    @property
    def cfg(self) -> FunctionsConfig:
        assert isinstance(self.config, FunctionsConfig)
        return self.config

    # -- names and sizes (pure; app and plan names, requirements: WebTarget) ----------------------
    @cached_property
    def storage_name(self) -> str:
        if self.cfg.storage_account:
            return self.cfg.storage_account
        seed = f"{self.cfg.subscription}/{self.cfg.resource_group}/{self.app_name}"
        return (re.sub(r"[^a-z0-9]", "", self.app_name)[:14] + hashlib.sha256(seed.encode()).hexdigest()[:8])

    @property
    def queued(self) -> bool:
        return self.manifest.scoring.type == ScoringType.near_real_time

    @property
    def mode(self) -> str:
        return self.manifest.scoring.queue.mode if self.queued else "http"

    deployed_record: dict[str, Any] | None = None  # the package's record, as read() found it

    @property
    def ready_group(self) -> str:
        """Flex always-ready instances are per group: the HTTP triggers, Durable, or one function."""
        return {"http": "http", "durable": "durable"}.get(self.mode, "function:score_queue")

    @cached_property
    def package_requirements(self) -> list[str]:
        """What the package installs: the app's own imports, then the user's requirements."""
        return [*package.host_requirements(self.mode), *self.requirements]

    @cached_property
    def model_bytes(self) -> int:
        model = self.manifest.model.path
        return tree_size(model) if model else 0

    @cached_property
    def requirement(self) -> sizing.Requirement:
        r = self.manifest.resources
        return sizing.requirement(model_bytes=self.model_bytes, cpu=r.cpu, memory_gib=r.memory_gb,
                                  gpu=r.gpu, requirement_lines=self.requirements)

    @cached_property
    def hosting(self) -> Hosting:
        if self.manifest.model.path is None:
            raise self.fail("the functions target packages the model with the app: give model.path "
                            "(an azureml:// model needs an Azure ML target)")
        if self.requirement.gpu:
            raise self.fail("Azure Functions has no GPUs: use an Azure ML target for a GPU model")
        try:
            init_s, init_why = estimate_init_seconds(self.model_bytes, self.requirements)
            return choose_hosting(self.cfg, self.requirement.memory_gib, reasons="; ".join(self.requirement.reasons),
                                  realtime=not self.queued, init_s=init_s, init_why=init_why)
        except ValueError as e:
            raise self.fail(str(e), hint="set hosting / premium_sku, or resources.memory_gb") from None

    @cached_property
    def app_config(self) -> dict[str, Any]:
        return package.app_config(self.manifest.code.entry, self.manifest.scoring.queue.max_attempts,
                                  self.manifest.environment.variables, self.mode)

    @cached_property
    def package_digest(self) -> str:
        return package.input_digest(code_dir=self.manifest.code.path, model_path=self.manifest.model.path,
                                    requirements=self.package_requirements, python=self.manifest.environment.python,
                                    config=self.app_config)

    def managed_settings(self) -> dict[str, str]:
        """App settings deployctl manages that are not secret (they go in the spec)."""
        out = {"DEPLOYCTL_QUEUE": REQUEST_QUEUE, "DEPLOYCTL_RESULTS": RESULTS_CONTAINER}
        if self.hosting.plan == "premium":
            out.update({"FUNCTIONS_EXTENSION_VERSION": "~4", "FUNCTIONS_WORKER_RUNTIME": "python"})
        return out

    def _id(self, kind: str, name: str) -> str:
        ns = "Microsoft.Storage/storageAccounts" if kind == T_STORAGE else \
            "Microsoft.Web/serverfarms" if kind == T_PLAN else "Microsoft.Web/sites"
        return f"/subscriptions/{self.cfg.subscription}/resourceGroups/{self.cfg.resource_group}/providers/{ns}/{name}"

    # -- planning ---------------------------------------------------------------------------------
    def desired(self) -> list[Resource]:
        h, region = self.hosting, self.cfg.region
        app_spec: dict[str, Any] = {"location": region, "plan": self.plan_name, "python": self.manifest.environment.python,
                                    "settings": self.managed_settings()}
        app_spec["always_ready"] = h.always_ready
        if h.plan == "flex":
            app_spec.update({"instance_memory_mb": h.instance_memory_mb,
                             "maximum_instance_count": self.cfg.maximum_instance_count})
        return [
            Resource(T_STORAGE, self.storage_name, {"location": region, "sku": "Standard_LRS", "kind": "StorageV2"},
                     key=self._id(T_STORAGE, self.storage_name), replace_on=("location", "kind")),
            Resource(T_PLAN, self.plan_name, {"location": region, "sku": h.sku},
                     key=self._id(T_PLAN, self.plan_name), replace_on=("location", "sku")),
            Resource(T_APP, self.app_name, app_spec, key=self._id(T_APP, self.app_name),
                     depends_on=(f"{T_STORAGE}/{self.storage_name}", f"{T_PLAN}/{self.plan_name}"),
                     replace_on=("location", "plan"), exact=("settings",)),
            Resource(T_PACKAGE, self.app_name, {"digest": self.package_digest, "entry": self.manifest.code.entry},
                     key=self._id(T_APP, self.app_name) + "/package", depends_on=(f"{T_APP}/{self.app_name}",)),
        ]

    def check(self, changes: list[Change]) -> list[Finding]:
        out = [Finding(severity=Severity.info, message=f"hosting: {self.hosting.why}"),
               Finding(severity=Severity.info, message=f"cold starts: {self.hosting.ready_why}")]
        if self.hosting.plan == "premium" and self.mode == "durable":
            out.append(Finding(severity=Severity.info, message="Durable app on Premium: new packages are published in "
                               "place (a staging slot would share the task hub and run production's "
                               "orchestrations), smoke-tested, and the previous package put back on failure"))
        measured = (self.deployed_record or {}).get("first_answer_ms")
        if (measured and not self.queued and self.cfg.always_ready is None and self.hosting.always_ready == 0
                and measured / 1000 > COLD_START_BUDGET_S):
            out.append(Finding(severity=Severity.warning, message=f"cold starts: the deployed package's first answer "
                               f"took {measured / 1000:.1f} s (measured after its deploy), over the "
                               f"{COLD_START_BUDGET_S:g} s budget the estimate did not foresee",
                               hint="set always_ready: 1 to keep an instance warm"))
        if self.manifest.scoring.sample_request is None:
            out.append(Finding(severity=Severity.warning, message="no scoring.sample_request: a new package is "
                               "published without a smoke test, and cannot be rolled back on failure"))
        return out

    @cached_property
    def storage(self) -> Any:
        return webapps.storage_client(self.session, self.cfg.subscription)

    def read(self) -> list[Observed]:
        rg, out = self.cfg.resource_group, []
        acct = self.op("get storage account", lambda: webapps.get_or_none(
            lambda: self.storage.storage_accounts.get_properties(rg, self.storage_name)))
        if acct is not None:
            a = webapps.as_dict(acct)
            out.append(Observed(T_STORAGE, self.storage_name, {
                "location": webapps.norm_location(a.get("location")), "sku": (a.get("sku") or {}).get("name"),
                "kind": a.get("kind")}, tags=a.get("tags") or {}, key=self._id(T_STORAGE, self.storage_name)))
        if (plan := self.observe_plan(T_PLAN)) is not None:
            out.append(plan)
        site = self.op("get function app", lambda: webapps.get_or_none(lambda: self.web.web_apps.get(rg, self.app_name)))
        if site is not None:
            s = webapps.as_dict(site)
            settings = self.op("list app settings", lambda: webapps.app_settings(self.web, rg, self.app_name))
            out.append(Observed(T_APP, self.app_name, self._app_spec_of(s, settings), tags=s.get("tags") or {},
                                key=self._id(T_APP, self.app_name)))
            record = json.loads(settings.get(RECORD) or "null")
            self.deployed_record = record  # check() compares its measured first answer with the estimate
            if record:
                out.append(Observed(T_PACKAGE, self.app_name, record["spec"], tags=record["tags"],
                                    key=self._id(T_APP, self.app_name) + "/package"))
        return out

    def _app_spec_of(self, site: Mapping[str, Any], settings: Mapping[str, str]) -> dict[str, Any]:
        props = site.get("properties") or {}
        fac = props.get("functionAppConfig") or {}
        runtime = fac.get("runtime") or {}
        fx = str((props.get("siteConfig") or {}).get("linuxFxVersion") or "")
        spec: dict[str, Any] = {
            "location": webapps.norm_location(site.get("location")),
            "plan": str(props.get("serverFarmId") or "").rsplit("/", 1)[-1],
            "python": runtime.get("version") or (fx.split("|", 1)[1] if "|" in fx else None),
            "settings": {k: v for k, v in settings.items() if k not in SECRET_SETTINGS and k != RECORD},
        }
        if fac:
            scale = fac.get("scaleAndConcurrency") or {}
            ready = {a.get("name"): a.get("instanceCount") for a in scale.get("alwaysReady") or []}
            spec.update({"instance_memory_mb": scale.get("instanceMemoryMB"),
                         "always_ready": ready.get(self.ready_group, 0),
                         "maximum_instance_count": scale.get("maximumInstanceCount")})
        else:
            spec["always_ready"] = (props.get("siteConfig") or {}).get("minimumElasticInstanceCount", 0)
        return spec

    # -- writing ----------------------------------------------------------------------------------
    def create(self, resource: Resource, tags: Mapping[str, str]) -> None:
        all_tags = self.azure_tags(tags)
        {T_STORAGE: self._create_storage, T_PLAN: self._create_plan, T_APP: self._create_app,
         T_PACKAGE: self._deploy_package}[resource.type](resource, all_tags)

    def _create_storage(self, r: Resource, tags: dict[str, str]) -> None:
        rg, name = self.cfg.resource_group, r.name
        body = {"location": r.spec["location"], "sku": {"name": r.spec["sku"]}, "kind": r.spec["kind"], "tags": tags,
                "properties": {"minimumTlsVersion": "TLS1_2", "allowBlobPublicAccess": False,
                               "supportsHttpsTrafficOnly": True}}
        self.op("create storage account", lambda: self.storage.storage_accounts.begin_create(rg, name, body).result(),
                resource=r.address, budget=PROVISION)
        blobs, queues = self._data_clients()
        from azure.core.exceptions import ResourceExistsError

        for container in (DEPLOY_CONTAINER, RESULTS_CONTAINER):
            try:
                self.op(f"create container {container}", functools.partial(blobs.create_container, container))
            except Exception as e:
                if not isinstance(e.__cause__, ResourceExistsError) and not isinstance(e, ResourceExistsError):
                    raise
        if self.mode == "queue":  # durable apps keep their state in the task hub the host makes
            def ensure_queue(q: str) -> None:
                if not _queue_exists(queues, q):
                    queues.get_queue_client(q).create_queue()

            for q in (REQUEST_QUEUE, f"{REQUEST_QUEUE}-poison"):
                self.op(f"create queue {q}", functools.partial(ensure_queue, q))

    def _key(self) -> str:
        rg = self.cfg.resource_group
        keys = self.op("list storage keys", lambda: self.storage.storage_accounts.list_keys(rg, self.storage_name))
        value = str(webapps.as_dict(keys)["keys"][0]["value"])
        self.ctx.secret(value)
        return value

    def _connection_string(self) -> str:
        conn = (f"DefaultEndpointsProtocol=https;AccountName={self.storage_name};AccountKey={self._key()};"
                "EndpointSuffix=core.windows.net")
        self.ctx.secret(conn)
        return conn

    def _data_clients(self) -> tuple[Any, Any]:
        from azure.storage.blob import BlobServiceClient
        from azure.storage.queue import QueueServiceClient

        cred = {"account_name": self.storage_name, "account_key": self._key()}
        kw = self.session.storage_kwargs()
        return (BlobServiceClient(f"https://{self.storage_name}.blob.core.windows.net", credential=cred, **kw),
                QueueServiceClient(f"https://{self.storage_name}.queue.core.windows.net", credential=cred, **kw))

    def _create_plan(self, r: Resource, tags: dict[str, str]) -> None:
        body = webapps.plan_body(r.spec["location"], r.spec["sku"], tags, max_burst=self.cfg.maximum_instance_count)
        self.op("create plan", lambda: self.web.app_service_plans.begin_create_or_update(
            self.cfg.resource_group, r.name, body).result(), resource=r.address, budget=PROVISION)

    def _site_body(self, s: Mapping[str, Any], tags: Mapping[str, str]) -> dict[str, Any]:
        props: dict[str, Any] = {"serverFarmId": self._id(T_PLAN, s["plan"]), "reserved": True, "httpsOnly": True}
        if self.hosting.plan == "flex":
            props["functionAppConfig"] = {
                "deployment": {"storage": {
                    "type": "blobContainer", "value": f"https://{self.storage_name}.blob.core.windows.net/{DEPLOY_CONTAINER}",
                    "authentication": {"type": "StorageAccountConnectionString",
                                       "storageAccountConnectionStringName": "DEPLOYMENT_STORAGE_CONNECTION_STRING"}}},
                "runtime": {"name": "python", "version": s["python"]},
                "scaleAndConcurrency": {"instanceMemoryMB": s["instance_memory_mb"],
                                        "maximumInstanceCount": s["maximum_instance_count"],
                                        "alwaysReady": [{"name": self.ready_group,
                                                         "instanceCount": s["always_ready"]}]}}
            props["siteConfig"] = {}
        else:
            props["siteConfig"] = {"linuxFxVersion": f"Python|{s['python']}",
                                   "minimumElasticInstanceCount": s["always_ready"]}
        return {"location": s["location"], "kind": "functionapp,linux", "tags": dict(tags), "properties": props}

    def _create_app(self, r: Resource, tags: dict[str, str]) -> None:
        rg, s = self.cfg.resource_group, r.spec
        body = self._site_body(s, tags)
        self.op("create function app", lambda: self.web.web_apps.begin_create_or_update(rg, r.name, body).result(),
                resource=r.address, budget=PROVISION)
        current = self.op("list app settings", lambda: webapps.app_settings(self.web, rg, r.name))
        conn = self._connection_string()
        settings = {**s["settings"], "AzureWebJobsStorage": conn}
        if self.hosting.plan == "flex":
            settings["DEPLOYMENT_STORAGE_CONNECTION_STRING"] = conn
        if RECORD in current:  # the package's record survives an app update
            settings[RECORD] = current[RECORD]
        self.op("set app settings", lambda: webapps.put_app_settings(self.web, rg, r.name, settings), resource=r.address)

    def _deploy_package(self, r: Resource, tags: dict[str, str]) -> None:
        from targets.local.envs import cache_root

        rg = self.cfg.resource_group
        with tempfile.TemporaryDirectory(prefix="deployctl-functions-") as tmp:
            sp = package.site_packages(self.package_requirements, self.manifest.environment.python, cache_root(),
                                       progress=self.ctx.progress)
            staged = package.stage(Path(tmp) / "pkg", code_dir=self.manifest.code.path,
                                   model_path=self.manifest.model.path, config=self.app_config, site_packages_dir=sp)
            info = package.zip_package(staged, Path(tmp) / "package.zip")
            uri = self._upload(info)
        settings = self.op("list app settings", lambda: webapps.app_settings(self.web, rg, self.app_name))
        previous = json.loads(settings.get(RECORD) or "null")
        if self.hosting.plan == "premium" and self.mode != "durable":
            first_ms = self._deploy_through_slot(uri, r, tags, settings)
        else:
            first_ms = self._deploy_in_place(uri, r, previous)
        record = {"spec": dict(r.spec), "tags": tags, "sha256": info.sha256, "size": info.size,
                  "first_answer_ms": first_ms, "previous_sha256": (previous or {}).get("sha256")}
        settings = self.op("list app settings", lambda: webapps.app_settings(self.web, rg, self.app_name))
        settings[RECORD] = json.dumps(record, sort_keys=True)
        self.op("record package", lambda: webapps.put_app_settings(self.web, rg, self.app_name, settings),
                resource=r.address)

    def _deploy_in_place(self, uri: str, r: Resource, previous: Mapping[str, Any] | None) -> float | None:
        """Flex (no slots) and Durable apps (a slot would share the task hub): publish, smoke-test,
        and publish the previous package again when the smoke test fails."""
        self._publish(uri, r.address)
        first_ms, problem = self._smoke()
        if problem is not None:
            if previous:
                self.ctx.progress(f"smoke test failed ({problem}): publishing the previous package again")
                self._publish(self._blob_uri(previous["sha256"]), r.address)
            raise self.fail(f"the new package failed its smoke test: {problem}"
                            + ("; the previous package is live again" if previous else ""), resource=r.address)
        return first_ms

    def _deploy_through_slot(self, uri: str, r: Resource, tags: dict[str, str], settings: Mapping[str, str]) -> float | None:
        """Premium blue/green: the package goes to the staging slot, is smoke-tested there, then the
        slot is swapped into production.  A failing package never takes traffic."""
        rg = self.cfg.resource_group
        app = next(x for x in self.desired() if x.type == T_APP)
        body = self._site_body(app.spec, tags)
        self.op("create staging slot", lambda: self.web.web_apps.begin_create_or_update_slot(
            rg, self.app_name, SLOT, body).result(), resource=r.address, budget=PROVISION)
        slot_settings = {k: v for k, v in settings.items() if k != RECORD}
        if self.mode == "queue":
            # The slot shares production's queue: its trigger stays disabled (a slot-sticky setting,
            # so it never moves to production in the swap) and the smoke test goes over HTTP.
            self.op("make the queue trigger's switch slot-sticky", lambda: self.web.web_apps.
                    update_slot_configuration_names(rg, self.app_name, {"properties": {"appSettingNames": [
                        QUEUE_DISABLED]}}), resource=r.address)
            slot_settings[QUEUE_DISABLED] = "1"
        self.op("set slot app settings", lambda: webapps.put_app_settings(self.web, rg, self.app_name, slot_settings,
                                                                          slot=SLOT), resource=r.address)
        self._publish(uri, r.address, slot=SLOT)
        first_ms, problem = self._smoke(slot=SLOT)
        if problem is not None:
            raise self.fail(f"the new package failed its smoke test on the {SLOT} slot: {problem}; production was "
                            "not swapped and still runs the previous package", resource=r.address)
        self.ctx.progress(f"smoke test passed on the {SLOT} slot: swapping it into production")
        self.op("swap slot", lambda: webapps.swap_into_production(self.web, rg, self.app_name, SLOT),
                resource=r.address, budget=PROVISION)
        return first_ms

    def _blob_uri(self, sha: str, with_sas: bool = True) -> str:
        url = f"https://{self.storage_name}.blob.core.windows.net/{DEPLOY_CONTAINER}/packages/{sha}.zip"
        if not with_sas:
            return url
        from datetime import datetime, timedelta, timezone

        from azure.storage.blob import BlobSasPermissions, generate_blob_sas

        sas = generate_blob_sas(self.storage_name, DEPLOY_CONTAINER, f"packages/{sha}.zip", account_key=self._key(),
                                permission=BlobSasPermissions(read=True),
                                expiry=datetime.now(timezone.utc) + timedelta(hours=2))
        self.ctx.secret(sas)
        return f"{url}?{sas}"

    def _upload(self, info: package.PackageInfo) -> str:
        """Upload the zip under its sha256 unless it is there already; its URL (read SAS)."""
        blobs, _ = self._data_clients()
        blob = blobs.get_blob_client(DEPLOY_CONTAINER, f"packages/{info.sha256}.zip")
        exists = self.op("check package blob", lambda: blob.exists())
        if exists:
            self.ctx.progress(f"package {info.sha256[:12]} already uploaded")
        else:
            self.ctx.progress(f"uploading package {info.sha256[:12]} ({info.size / 2**20:.1f} MiB, {info.files} files)")
            with open(info.path, "rb") as f:
                data = f.read()
            self.op("upload package", lambda: blob.upload_blob(data, overwrite=True))
        return self._blob_uri(info.sha256)

    def _publish(self, uri: str, address: str, slot: str | None = None) -> None:
        cred = self.session.get_credential(self.cfg.subscription)
        scm = f"{self._label(slot)}.scm.azurewebsites.net"
        self.op("publish package", lambda: webapps.publish(self.session, cred, scm, uri, sleep=self.sleep),
                resource=address, budget=PROVISION)

    def _smoke(self, slot: str | None = None) -> tuple[float | None, str | None]:
        """(first answer in ms, problem): the sample request through the app (or a slot) after a deploy."""
        sample = self.manifest.scoring.sample_request
        if sample is None:
            return None, None
        t0 = time.perf_counter()
        try:
            result = self._score(sample.read_bytes(), timeout_s=300, slot=slot)
        except Exception as e:  # noqa: BLE001 - any failure of the new package is a failed smoke test
            self.ctx.smoke_tested(False, detail=str(e)[:300])
            return None, str(e)
        ms = round((time.perf_counter() - t0) * 1000, 1)
        problem = None if result.ok else f"HTTP {result.status_code}: {str(result.body)[:300]}"
        self.ctx.smoke_tested(result.ok, status=result.status_code, latency_ms=ms, detail=problem or "")
        return ms, problem

    def update(self, resource: Resource, observed: Observed, tags: Mapping[str, str]) -> None:
        self.create(resource, tags)

    def delete(self, observed: Observed) -> None:
        rg = self.cfg.resource_group
        if observed.type == T_PACKAGE:  # goes with the app; forget the record if the app stays
            self.forget_setting(RECORD)
            return
        if observed.type == T_APP:
            self.op("delete function app", lambda: webapps.get_or_none(lambda: self.web.web_apps.delete(rg, observed.name)))
        elif observed.type == T_PLAN:
            self.op("delete plan", lambda: webapps.get_or_none(lambda: self.web.app_service_plans.delete(rg, observed.name)))
        else:
            self.op("delete storage account", lambda: webapps.get_or_none(
                lambda: self.storage.storage_accounts.delete(rg, observed.name)))

    # -- using ------------------------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        return f"https://{self.app_name}.azurewebsites.net"

    @cached_property
    def function_key(self) -> str:
        key = self.op("list function keys", lambda: webapps.function_key(
            self.web, self.cfg.resource_group, self.app_name, "score_http"))
        self.ctx.secret(key)
        return str(key)

    def outputs(self, observed: list[Observed]) -> dict[str, Any]:
        if not any(o.type == T_APP for o in observed):
            return {}
        rg = self.cfg.resource_group
        settings = self.op("list app settings", lambda: webapps.app_settings(self.web, rg, self.app_name))
        record = json.loads(settings.get(RECORD) or "null") or {}
        out: dict[str, Any] = {"app": self.app_name, "hosting": self.hosting.plan, "plan_sku": self.hosting.sku,
                               "package_sha256": record.get("sha256"), "first_answer_ms": record.get("first_answer_ms")}
        if self.mode == "durable":  # the async HTTP pattern: POST answers 202 and the status URL
            out["submit_uri"] = f"{self.base_url}/api/requests"
        elif self.queued:
            out.update({"queue": REQUEST_QUEUE, "poison_queue": f"{REQUEST_QUEUE}-poison",
                        "results": f"{self.storage_name}/{RESULTS_CONTAINER}"})
        else:
            out["scoring_uri"] = f"{self.base_url}/api/score"
        return out

    def secrets(self, observed: list[Observed]) -> dict[str, str]:
        if not any(o.type == T_APP for o in observed) or self.queued:
            return {}
        return {"function_key": self.function_key}

    def _warm(self, timeout_s: float) -> None:
        """GET /api/health (anonymous): starts a scaled-to-zero app before a queued request, and says
        plainly when the package did not load."""
        status, resp, _ = webapps.call_app(self.session, f"{self.base_url}/api/health", key=None, method="GET",
                                           timeout_s=timeout_s)
        if status != 200:
            detail = resp.get("error") if isinstance(resp, dict) else resp
            raise self.fail(f"the function app is not ready (HTTP {status}): {str(detail)[:500]}")

    def _score(self, body: bytes | str, timeout_s: float, slot: str | None = None) -> InvokeResult:
        if slot:
            key = self.op("list slot function keys", lambda: webapps.function_key(
                self.web, self.cfg.resource_group, self.app_name, "score_http", slot))
            self.ctx.secret(key)
            status, resp, _ = webapps.call_app(self.session, f"https://{self._label(slot)}.azurewebsites.net"
                                               "/api/score", key=key, body=body, timeout_s=timeout_s)
            return InvokeResult(ok=200 <= status < 300, status_code=status, body=resp)
        if self.mode == "durable":
            return self._durable_wait(*self._durable_start(body, None), timeout_s)
        if self.queued:
            self._warm(timeout_s)
            return self._submit_and_wait(body, None, timeout_s)
        status, resp, headers = webapps.call_app(self.session, f"{self.base_url}/api/score", key=self.function_key,
                                                 body=body, timeout_s=timeout_s)
        return InvokeResult(ok=200 <= status < 300, status_code=status, body=resp,
                            details={"run_ms": headers.get("x-ms-run-fn-exec-ms")} if status == 200 else {})

    def invoke(self, request: InvokeRequest) -> InvokeResult:
        if request.request_id:
            if not self.queued:
                raise self.fail("--request-id is for near-real-time scoring (scoring.type: near-real-time)")
            if self.mode == "durable":  # briefly, for one in flight
                return self._durable_wait(request.request_id, self._durable_status_url(request.request_id),
                                          min(request.timeout_s, 5.0))
            self._warm(request.timeout_s)
            return self._wait(request.request_id, min(request.timeout_s, 5.0))  # briefly, for one in flight
        body = request.body if request.body is not None else (
            self.manifest.scoring.sample_request.read_bytes() if self.manifest.scoring.sample_request else None)
        if body is None:
            raise self.fail("nothing to send: give a request body or scoring.sample_request")
        raw = body if isinstance(body, (bytes, str)) else json.dumps(body)
        if self.mode == "durable":
            rid, url = self._durable_start(raw, request.idempotency_key)
            if request.run_async:
                return InvokeResult(ok=True, status_code=202, request_id=rid, state="queued")
            return self._durable_wait(rid, url, request.timeout_s)
        if self.queued:
            if request.run_async:  # the queue trigger wakes the app: nothing to wait for
                rid = self._submit(raw, request.idempotency_key)
                return InvokeResult(ok=True, status_code=202, request_id=rid, state="queued")
            self._warm(request.timeout_s)
            return self._submit_and_wait(raw, request.idempotency_key, request.timeout_s)
        if request.run_async:
            raise self.fail("--async is for near-real-time scoring (scoring.type: near-real-time)")
        return self._score(raw, request.timeout_s)

    # -- near-real-time ---------------------------------------------------------------------------
    def _submit(self, raw: bytes | str, idempotency_key: str | None) -> str:
        """Queue ``{"id", "body"}`` (base64, as the queue trigger reads it); the request id.  The
        same idempotency key gives the same id: the app scores an id once."""
        from azure.storage.queue import TextBase64EncodePolicy

        rid = (str(uuid.uuid5(uuid.NAMESPACE_URL, f"{self.app_name}/{idempotency_key}")) if idempotency_key
               else str(uuid.uuid4()))
        text = raw.decode() if isinstance(raw, bytes) else raw
        try:
            payload = json.loads(text)
        except ValueError as e:
            raise self.fail(f"the request is not JSON: {e}") from None
        _, queues = self._data_clients()
        q = queues.get_queue_client(REQUEST_QUEUE, message_encode_policy=TextBase64EncodePolicy())
        self.op("queue request", lambda: q.send_message(json.dumps({"id": rid, "body": payload})))
        return rid

    def _result(self, rid: str) -> InvokeResult:
        from azure.core.exceptions import ResourceNotFoundError

        blobs, _ = self._data_clients()
        blob = blobs.get_blob_client(RESULTS_CONTAINER, f"{rid}.json")
        try:
            doc = json.loads(self.op("read result", lambda: blob.download_blob().readall()))
        except Exception as e:
            if isinstance(e, ResourceNotFoundError) or isinstance(e.__cause__, ResourceNotFoundError):
                return InvokeResult(ok=True, status_code=202, request_id=rid, state="queued")
            raise
        return InvokeResult(ok=doc.get("state") == "done", status_code=200, body=doc.get("result"), request_id=rid,
                            state=doc.get("state"), details={"error": doc["error"]} if doc.get("error") else {})

    def _submit_and_wait(self, raw: bytes | str, idempotency_key: str | None, timeout_s: float) -> InvokeResult:
        return self._wait(self._submit(raw, idempotency_key), timeout_s)

    def _wait(self, rid: str, timeout_s: float) -> InvokeResult:
        deadline = time.monotonic() + timeout_s
        while True:
            res = self._result(rid)
            if res.state != "queued" or time.monotonic() > deadline:
                return res
            time.sleep(0.2)


    # -- near-real-time, mode: durable (the async HTTP pattern) -------------------------------------
    def _durable_start(self, raw: bytes | str, idempotency_key: str | None) -> tuple[str, str]:
        """POST to the starter: (request id, the status URL its 202 names in ``Location``)."""
        rid = (str(uuid.uuid5(uuid.NAMESPACE_URL, f"{self.app_name}/{idempotency_key}")) if idempotency_key
               else str(uuid.uuid4()))
        key = self.op("list function keys", lambda: webapps.function_key(
            self.web, self.cfg.resource_group, self.app_name, "submit"))
        self.ctx.secret(key)
        status, resp, headers = webapps.call_app(self.session, f"{self.base_url}/api/requests?id={rid}", key=key,
                                                 body=raw)
        if status != 202:
            raise self.fail(f"starting the request answered HTTP {status}: {str(resp)[:300]}")
        location = next((v for k, v in headers.items() if k.lower() == "location"), None)
        if not location:
            raise self.fail("the starter answered 202 without a status URL (Location)")
        self.ctx.secret(location.split("code=", 1)[1].split("&", 1)[0] if "code=" in location else location)
        return rid, location

    def _durable_status_url(self, rid: str) -> str:
        """The status URL of an earlier request (the Durable extension's webhook, system key)."""
        keys = self.op("list host keys", lambda: webapps.as_dict(
            self.web.web_apps.list_host_keys(self.cfg.resource_group, self.app_name)))
        system = str((keys.get("systemKeys") or keys.get("system_keys") or {}).get("durabletask_extension", ""))
        self.ctx.secret(system)
        return f"{self.base_url}/runtime/webhooks/durabletask/instances/{rid}?code={system}"

    def _durable_status(self, rid: str, url: str) -> tuple[InvokeResult, float]:
        """The orchestration's status: (result, the Retry-After it asks for)."""
        status, doc, headers = webapps.call_app(self.session, url, key=None, method="GET")
        retry_after = float(next((v for k, v in headers.items() if k.lower() == "retry-after"), 1) or 1)
        if status == 404:
            return InvokeResult(ok=False, status_code=404, request_id=rid, state="unknown"), retry_after
        if status not in (200, 202):
            raise self.fail(f"the request's status answered HTTP {status}: {str(doc)[:300]}")
        runtime = (doc or {}).get("runtimeStatus")
        state = {"Completed": "done", "Failed": "dead", "Terminated": "dead", "Running": "running"}.get(str(runtime), "queued")
        return InvokeResult(ok=state != "dead", status_code=status, request_id=rid, state=state,
                            body=(doc or {}).get("output") if state == "done" else None,
                            details={"error": (doc or {}).get("output")} if state == "dead" else {}), retry_after

    def _durable_wait(self, rid: str, url: str, timeout_s: float) -> InvokeResult:
        """Poll the status URL until the orchestration ends or ``timeout_s`` passes.  Retry-After
        (10 s from the extension) is honoured up to a second: a CLI caller waits for one answer, so
        polls start at 0.1 s and double up to that."""
        deadline, pause = time.monotonic() + timeout_s, 0.1
        while True:
            res, retry_after = self._durable_status(rid, url)
            if res.state in ("done", "dead", "unknown") or time.monotonic() > deadline:
                return res
            time.sleep(min(pause, retry_after, max(deadline - time.monotonic(), 0.05)))
            pause = min(pause * 2, 1.0)


def _queue_exists(queues: Any, name: str) -> bool:
    from azure.core.exceptions import ResourceNotFoundError

    try:
        queues.get_queue_client(name).get_queue_properties()
        return True
    except ResourceNotFoundError:
        return False
