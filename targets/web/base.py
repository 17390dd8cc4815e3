"""The base of the Microsoft.Web targets (``functions``, ``app-service``): the app's and plan's
names and ids, the management client, the requirements, the plan as observed, and the record
of what was deployed that each keeps in a production app setting."""

from __future__ import annotations

from typing import Any

from orchestrator.azure.base import AzureTarget
from orchestrator.lazy import cached_property
from orchestrator.manifest.model import dns_name
from orchestrator.requirements import parse_requirements
from orchestrator.target import Observed
from targets.web import webapps


class WebTarget(AzureTarget):
    @property
    def site_cfg(self) -> Any:
        """The config's Microsoft.Web settings both kinds have (subscription, resource_group, app_name)."""
        return self.config

    @cached_property
    def app_name(self) -> str:
        return self.site_cfg.app_name or dns_name(self.manifest.name, self.config.name, max_len=60)

    @property
    def plan_name(self) -> str:
        return f"{self.app_name}-plan"

    def arm_id(self, namespace: str, name: str) -> str:
        """``/subscriptions/.../providers/<namespace>/<name>`` in the target's resource group."""
        cfg = self.site_cfg
        return f"/subscriptions/{cfg.subscription}/resourceGroups/{cfg.resource_group}/providers/{namespace}/{name}"

    def plan_id(self) -> str:
        return self.arm_id("Microsoft.Web/serverfarms", self.plan_name)

    def site_id(self) -> str:
        return self.arm_id("Microsoft.Web/sites", self.app_name)

    @cached_property
    def requirements(self) -> list[str]:
        env = self.manifest.environment
        return parse_requirements(env.requirements, env.conda_file)[0]

    @cached_property
    def web(self) -> Any:
        return webapps.web_client(self.session, self.site_cfg.subscription)

    def observe_plan(self, resource_type: str) -> Observed | None:
        """The plan as it is (location and SKU), or None."""
        rg: str = self.site_cfg.resource_group
        plan = self.op("get plan", lambda: webapps.get_or_none(lambda: self.web.app_service_plans.get(rg, self.plan_name)))
        if plan is None:
            return None
        p = webapps.as_dict(plan)
        return Observed(resource_type, self.plan_name, {"location": webapps.norm_location(p.get("location")),
                                                        "sku": (p.get("sku") or {}).get("name")},
                        tags=p.get("tags") or {}, key=self.plan_id())

    def _label(self, slot: str | None) -> str:
        """The host name's first label: the app's, or ``<app>-<slot>`` for a deployment slot."""
        return f"{self.app_name}-{slot}" if slot else self.app_name

    def logs(self, tail: int = 100, deployment: str | None = None) -> str:
        """The production app's log through Kudu (``deployment: staging`` for the slot's), last
        ``tail`` lines."""
        cred = self.session.get_credential(self.site_cfg.subscription)
        text = self.op("read the container log", lambda: webapps.docker_log(
            self.session, cred, f"{self._label(deployment)}.scm.azurewebsites.net"))
        return "\n".join(text.splitlines()[-tail:]) if tail else text

    def forget_setting(self, setting: str) -> None:
        """Drop one production app setting (the deployed record when its resource goes)."""
        rg: str = self.site_cfg.resource_group
        settings = self.op("list app settings", lambda: webapps.get_or_none(
            lambda: webapps.app_settings(self.web, rg, self.app_name)))
        if settings and setting in settings:
            settings.pop(setting)
            self.op(f"forget {setting}", lambda: webapps.put_app_settings(self.web, rg, self.app_name, settings))
