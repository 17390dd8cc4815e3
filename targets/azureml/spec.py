"""What an Azure ML target wants, as plain resource specs.  Pure (reads only local files).

Assets are content-addressed: a model, code folder or environment gets the version
``<sha256[:12]>`` of its content, and its files go to the datastore path
``deployctl/<kind>/<sha256>/``.  Equal content is one upload and one registration, whoever asks.
A deployment's name is derived from the hash of what cannot change in place (model,
environment, code, instance type), so a new version is a new deployment beside the live one;
instance count and settings update in place.

Resource types (addresses are ``type/name``):

- ``azureml.environment/<name>:<version>``, ``azureml.model/<name>:<version>`` — registered
  asset versions (``model`` also covers a copy or a registry share of a model from another
  workspace: ``spec.copy``).  Code is not a resource of its own: azure-ai-ml 1.35 drops tags on
  code versions and cannot archive them, so deployctl could neither own nor remove one.  The code
  version is part of the deployment's spec (``code``); writing the deployment uploads and
  registers it when missing (content-addressed, so a code-only change uploads only the code);
- ``azureml.compute/<cluster>`` — batch only: the AmlCompute cluster;
- ``azureml.endpoint/<endpoint>``; ``azureml.deployment/<endpoint>/<deployment>``;
- ``azureml.traffic/<endpoint>`` (online: traffic split) or ``azureml.default/<endpoint>``
  (batch: default deployment) — a property of the endpoint, kept as its own resource so the
  plan shows a traffic change on its own line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from orchestrator.errors import UserError
from orchestrator.lazy import cached_property
from orchestrator.manifest.model import Manifest, dns_name
from orchestrator.packaging import tree_digest, tree_size
from orchestrator.plan import digest
from orchestrator.requirements import parse_requirements
from orchestrator.target import Resource
from targets.azureml.config import AksConfig, AzureMLConfig, BatchEndpointConfig, OnlineEndpointConfig

DEFAULT_IMAGE = "mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu22.04:latest"
INFERENCE_PACKAGES = ["azureml-inference-server-http"]
ASSET_ROOT = "deployctl"
T_ENV, T_MODEL = "azureml.environment", "azureml.model"
T_COMPUTE, T_ENDPOINT, T_DEPLOYMENT = "azureml.compute", "azureml.endpoint", "azureml.deployment"
T_TRAFFIC, T_DEFAULT = "azureml.traffic", "azureml.default"

_WS_URI = re.compile(r"^azureml://subscriptions/(?P<sub>[^/]+)/resourceGroups/(?P<rg>[^/]+)/workspaces/(?P<ws>[^/]+)"
                     r"/models/(?P<name>[^/]+)/versions/(?P<version>[^/]+)$")
_REG_URI = re.compile(r"^azureml://registries/(?P<registry>[^/]+)/models/(?P<name>[^/]+)/versions/(?P<version>[^/]+)$")


@dataclass(frozen=True)
class ModelRef:
    """A model.uri, parsed."""

    uri: str
    name: str
    version: str
    subscription: str | None = None
    resource_group: str | None = None
    workspace: str | None = None
    registry: str | None = None

    @classmethod
    def parse(cls, uri: str) -> ModelRef:
        if m := _WS_URI.match(uri):
            return cls(uri, m["name"], m["version"], m["sub"], m["rg"], m["ws"])
        if m := _REG_URI.match(uri):
            return cls(uri, m["name"], m["version"], registry=m["registry"])
        raise ValueError(f"not an Azure ML model URI: {uri}")


def conda_spec(python: str, requirement_lines: list[str]) -> dict[str, Any]:
    """The conda file of the scoring environment: the manifest's python and pip requirements
    (index options included: pip reads them in a conda file's pip section too) plus the inference
    server.  A requirement only this machine can reach (a local wheel or folder, a constraints
    file) is a UserError: Azure ML builds the image elsewhere."""
    pip: list[str] = []
    for line in requirement_lines:
        if not line or line.startswith("#"):
            continue
        target = line.split(None, 1)[1] if line.startswith(("-c ", "-e ")) else line
        if line.startswith("-c ") or target.startswith("/"):
            raise UserError(f"requirement {line!r} names a file on this machine, which Azure ML's image build "
                            "cannot reach", hint="publish the package to an index (--extra-index-url), or pin "
                            "the constraints in requirements.txt itself")
        pip.append(line)
    names = {re.split(r"[=<>~!\[; ]", p, maxsplit=1)[0].lower() for p in pip if not p.startswith("-")}
    pip += [p for p in INFERENCE_PACKAGES if p not in names]
    return {"name": "deployctl", "channels": ["conda-forge"],
            "dependencies": [f"python={python}", "pip", {"pip": pip}]}


def read_requirements(manifest: Manifest) -> list[str]:
    """The pip requirement lines, read as pip reads requirements.txt (``-r`` inlined, comments
    dropped; see :mod:`orchestrator.requirements`), or a conda file's pip section."""
    env = manifest.environment
    if env.requirements is not None:
        return parse_requirements(env.requirements, None)[0]
    if env.conda_file is not None:
        import yaml

        data = yaml.safe_load(env.conda_file.read_text(encoding="utf-8")) or {}
        out: list[str] = []
        for dep in data.get("dependencies", []):
            if isinstance(dep, dict):
                out += [str(p) for p in dep.get("pip", [])]
        return out
    return []


class Desired:
    """Everything desired() and the write paths need to agree on (names, versions, hashes)."""

    def __init__(self, manifest: Manifest, cfg: AzureMLConfig) -> None:
        self.manifest = manifest
        self.cfg = cfg

    # -- names ---------------------------------------------------------------------------------
    @cached_property
    def endpoint(self) -> str:
        return self.cfg.endpoint_name or dns_name(self.manifest.name, self.cfg.name)

    # -- keys: what the engine locks on, across targets (desired and observed alike) ------------
    @property
    def ws_key(self) -> str:
        """The workspace, globally: targets in other workspaces never wait for this one's assets,
        and targets sharing this workspace take turns on its shared versions."""
        c = self.cfg
        return f"{c.subscription}/{c.resource_group}/{c.workspace}".lower()

    def asset_key(self, type_: str, name: str) -> str:
        return f"{self.ws_key}/{type_}/{name}".lower()

    @property
    def endpoint_key(self) -> str:
        return f"{self.ws_key}/{self.endpoint}".lower()

    @cached_property
    def code_sha(self) -> str:
        return tree_digest(self.manifest.code.path)

    @cached_property
    def code_name(self) -> str:
        return f"{self.manifest.name}-code"

    @cached_property
    def requirement_lines(self) -> list[str]:
        return read_requirements(self.manifest)

    @cached_property
    def conda(self) -> dict[str, Any]:
        if self.manifest.environment.conda_file is not None:
            import yaml

            data = yaml.safe_load(self.manifest.environment.conda_file.read_text(encoding="utf-8")) or {}
            return dict(data)
        return conda_spec(self.manifest.environment.python, self.requirement_lines)

    @cached_property
    def image(self) -> str:
        return self.manifest.environment.image or DEFAULT_IMAGE

    @cached_property
    def builds_image(self) -> bool:
        """True when deployctl's own image is the environment (``environment_image: deployctl``)."""
        return self.cfg.environment_image == "deployctl"

    @cached_property
    def image_inputs(self) -> Any:
        """deployctl's image without the model: Azure ML mounts the registered model at
        AZUREML_MODEL_DIR, so a model change is a new deployment, not a new image."""
        from dataclasses import replace

        from orchestrator.images.build import ImageInputs

        return replace(ImageInputs.from_manifest(self.manifest), model=None)

    @cached_property
    def env_sha(self) -> str:
        if self.builds_image:  # the image holds the code too: a code change is a new environment version
            return digest({"deployctl_image": self.image_inputs.content(), "registry": self.cfg.image_registry}, 64)
        return digest({"image": self.image, "conda": self.conda}, 64)

    @cached_property
    def environment_path(self) -> str:
        """Which path makes the environment, for the plan.  Pure."""
        if not self.builds_image:
            return (f"environment: built by Azure ML from the conda file on {self.image} (set environment_image: "
                    "deployctl to deploy deployctl's image instead and skip that build)")
        from orchestrator.images.choose import image_path

        where = self.cfg.image_registry or "the workspace's registry"
        return (f"environment: deployctl's image (without the model, which Azure ML mounts), pushed to {where} and "
                f"registered by digest, so Azure ML skips its environment build ({image_path(self.image_inputs)})")

    @cached_property
    def env_name(self) -> str:
        return f"{self.manifest.name}-env"

    @cached_property
    def model_ref(self) -> ModelRef | None:
        return ModelRef.parse(self.manifest.model.uri) if self.manifest.model.uri else None

    @cached_property
    def model_sha(self) -> str | None:
        return tree_digest(self.manifest.model.path) if self.manifest.model.path else None

    @cached_property
    def model_bytes(self) -> int:
        return tree_size(self.manifest.model.path) if self.manifest.model.path else 0

    @cached_property
    def model_name(self) -> str:
        if self.model_ref:
            return self.model_ref.name
        return self.manifest.model.name or self.manifest.name

    @cached_property
    def model_version(self) -> str:
        if self.model_ref:
            return self.model_ref.version
        assert self.model_sha
        return self.model_sha[:12]

    @cached_property
    def model_copy(self) -> str | None:
        """How the model reaches the workspace: None (local upload, or already in this workspace
        or in a registry), ``share`` (through cfg.registry) or ``copy`` (download + register)."""
        ref = self.model_ref
        if ref is None or ref.registry:
            return None
        same = (ref.subscription.lower(), ref.resource_group.lower(), ref.workspace.lower()) == (  # type: ignore[union-attr]
            self.cfg.subscription.lower(), self.cfg.resource_group.lower(), self.cfg.workspace.lower())
        if same:
            return None
        return "share" if self.cfg.registry else "copy"

    @cached_property
    def model_asset(self) -> str:
        """How a deployment refers to the model."""
        ref = self.model_ref
        if ref and ref.registry:
            return ref.uri
        if self.model_copy == "share":
            return f"azureml://registries/{self.cfg.registry}/models/{self.model_name}/versions/{self.model_version}"
        return f"azureml:{self.model_name}:{self.model_version}"

    def deployment_for(self, instance_type: str) -> str:
        """Azure ML deployment names: 3-32 chars, letter first.  The hash covers what a
        deployment cannot change in place, the resolved instance type included (a resized
        deployment is a new one beside the live one).  Batch passes "" (its size is the cluster's)."""
        h = digest({"model": self.model_asset, "env": self.env_sha, "code": self.code_sha,
                    "instance_type": instance_type, "variables": self.manifest.environment.variables,
                    "entry": self.manifest.code.entry}, 8)
        return f"d{h}"

    @cached_property
    def model_path(self) -> str:
        """Datastore path of a local model: ``deployctl/models/<sha>/<file or folder name>``, so
        the deployment sees it as Azure ML shows any registered model: the folder (or file) by its
        own name inside AZUREML_MODEL_DIR."""
        assert self.manifest.model.path is not None and self.model_sha
        return f"{self.asset_path('models', self.model_sha)}/{self.manifest.model.path.name}"

    @staticmethod
    def asset_path(kind: str, sha: str) -> str:
        return f"{ASSET_ROOT}/{kind}/{sha}"

    # -- resources -----------------------------------------------------------------------------
    def assets(self) -> list[Resource]:
        env_spec: dict[str, Any] = {"sha256": self.env_sha, "image": self.image, "python": self.manifest.environment.python}
        if self.builds_image:
            env_spec.update(image="deployctl", registry=self.cfg.image_registry or "workspace")
        env_name = f"{self.env_name}:{self.env_sha[:12]}"
        out = [Resource(T_ENV, env_name, env_spec, key=self.asset_key(T_ENV, env_name))]
        model_name = f"{self.model_name}:{self.model_version}"
        model_key = self.asset_key(T_MODEL, model_name)
        if self.model_sha:
            out.append(Resource(T_MODEL, model_name, {"sha256": self.model_sha, "size_bytes": self.model_bytes,
                                                      "path": self.model_path}, key=model_key))
        elif self.model_copy:
            spec: dict[str, Any] = {"source": self.model_ref.uri, "copy": self.model_copy}  # type: ignore[union-attr]
            if self.model_copy == "share":
                spec["registry"] = self.cfg.registry
            out.append(Resource(T_MODEL, model_name, spec, key=model_key))
        return out

    def online(self, instance_type: str) -> list[Resource]:
        """online-endpoint and aks: assets, endpoint, deployment, traffic."""
        assert isinstance(self.cfg, OnlineEndpointConfig)
        cfg = self.cfg
        ep_spec: dict[str, Any] = {"auth_mode": cfg.auth_mode}
        in_image = self.builds_image  # the code and its entry are in the image, served by deployctl's runtime
        dep_spec: dict[str, Any] = {
            "model": self.model_asset,
            "environment": f"azureml:{self.env_name}:{self.env_sha[:12]}",
            "code": None if in_image else f"azureml:{self.code_name}:{self.code_sha[:12]}",
            "scoring_script": None if in_image else self.manifest.code.entry,
            "instance_type": instance_type,
            "instance_count": cfg.instance_count,
            "environment_variables": dict(self.manifest.environment.variables),
            "max_concurrent_requests_per_instance": cfg.max_concurrent_requests_per_instance,
            "request_timeout_ms": cfg.request_timeout_ms,
        }
        if isinstance(cfg, AksConfig):
            ep_spec["compute"] = cfg.compute
        dep = self.deployment_for(instance_type)
        dep_addr = f"{T_DEPLOYMENT}/{self.endpoint}/{dep}"
        return [
            *self.assets(),
            Resource(T_ENDPOINT, self.endpoint, ep_spec, key=self.endpoint_key, replace_on=("compute",)),
            Resource(T_DEPLOYMENT, f"{self.endpoint}/{dep}", dep_spec, key=f"{self.endpoint_key}/{dep}",
                     depends_on=(f"{T_ENDPOINT}/{self.endpoint}",)),
            # exact: the previous deployment's share going to 0 is part of the change the plan shows
            Resource(T_TRAFFIC, self.endpoint, {"traffic": {dep: 100}, "mirror_traffic": {}},
                     key=f"{self.endpoint_key}/traffic", depends_on=(dep_addr,), exact=("traffic", "mirror_traffic")),
        ]

    def batch(self, instance_type: str) -> list[Resource]:
        assert isinstance(self.cfg, BatchEndpointConfig)
        cfg, bs = self.cfg, self.manifest.scoring.batch
        cluster = cfg.compute
        dep_spec: dict[str, Any] = {
            "model": self.model_asset,
            "environment": f"azureml:{self.env_name}:{self.env_sha[:12]}",
            "code": f"azureml:{self.code_name}:{self.code_sha[:12]}",
            "scoring_script": self.manifest.code.entry,
            "compute": cluster.name,
            "instance_count": cfg.instance_count,
            "mini_batch_size": bs.mini_batch_size,
            "max_concurrency_per_instance": bs.max_concurrency,
            "error_threshold": bs.error_threshold,
            "max_retries": bs.max_retries,
            "timeout": bs.timeout_s,
            "output_file_name": bs.output_file,
            "environment_variables": dict(self.manifest.environment.variables),
        }
        dep = self.deployment_for("")
        dep_addr = f"{T_DEPLOYMENT}/{self.endpoint}/{dep}"
        return [
            *self.assets(),
            Resource(T_COMPUTE, cluster.name, {"size": instance_type, "min_instances": cluster.min_nodes,
                                               "max_instances": cluster.max_nodes,
                                               "idle_time_before_scale_down": cluster.idle_seconds_before_scaledown},
                     key=f"{self.ws_key}/compute/{cluster.name}".lower(), replace_on=("size",)),
            Resource(T_ENDPOINT, self.endpoint, {}, key=self.endpoint_key),
            Resource(T_DEPLOYMENT, f"{self.endpoint}/{dep}", dep_spec, key=f"{self.endpoint_key}/{dep}",
                     depends_on=(f"{T_ENDPOINT}/{self.endpoint}", f"{T_COMPUTE}/{cluster.name}")),
            Resource(T_DEFAULT, self.endpoint, {"deployment": dep}, key=f"{self.endpoint_key}/default",
                     depends_on=(dep_addr,)),
        ]
