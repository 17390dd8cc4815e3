"""The manifest's data model (``apiVersion: deployctl/v1``), in pydantic v2.

Every model forbids unknown keys.  Paths resolve against the manifest's folder (given in the
validation context as ``base_dir``) and must exist.  Targets' own settings are defined by each
target plugin as a subclass of :class:`TargetConfig`; :mod:`orchestrator.manifest.validate`
builds the union of the installed ones.
"""

from __future__ import annotations

import re
import stat
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SerializeAsAny,
    ValidationInfo,
    field_validator,
    model_validator,
)

API_VERSION = "deployctl/v1"

# Azure ML endpoint names: 3-32 chars, start with a letter, letters/digits/hyphens.  We use the
# stricter DNS-safe lower-case subset so the name can prefix every resource on every target.
NAME_PATTERN = r"^[a-z][a-z0-9-]{1,30}[a-z0-9]$"


class ScoringType(str, Enum):
    real_time = "real-time"
    near_real_time = "near-real-time"
    batch = "batch"

    def __str__(self) -> str:
        return self.value


# Bounds on what a manifest may point at: checked when it is loaded, before anything reads them.
MAX_PATH_CHARS = 4096  # PATH_MAX on Linux: a longer path cannot name a file
MAX_INPUT_FILE_BYTES = 64 << 20  # requirements, conda files and sample requests are read whole


def _resolve(value: Path, info: ValidationInfo) -> tuple[Path, bool]:
    """(path, checked): resolved against the manifest's folder; ``checked`` is False for a model
    built without one (no base_dir in the context), where nothing is checked on disk."""
    base = (info.context or {}).get("base_dir")
    if len(str(value)) > MAX_PATH_CHARS:
        raise ValueError(f"path is {len(str(value)):,} characters long (at most {MAX_PATH_CHARS:,})")
    if "\0" in str(value):
        raise ValueError("path contains a NUL character")
    if base is None:
        return value, False
    path = value if value.is_absolute() else Path(base) / value
    try:
        if not path.exists():
            raise ValueError(f"path does not exist: {path}")
        return path.resolve(), True
    except OSError as e:  # too long a component, a loop of symlinks, no permission...
        raise ValueError(f"cannot use path {str(path)[:200]!r}: {e.strerror or e}") from None


def _existing_tree(value: Path, info: ValidationInfo) -> Path:
    """A regular file or a folder holding only regular files and folders (never a FIFO, a
    device or a socket: hashing it would block or never end)."""
    path, checked = _resolve(value, info)
    if checked:
        from orchestrator.packaging import UnsupportedFileError, check_tree

        try:
            check_tree(path)
        except UnsupportedFileError as e:
            raise ValueError(e.message) from None
    return path


def _existing_file(value: Path, info: ValidationInfo) -> Path:
    """A regular file of bounded size (it is read whole)."""
    path, checked = _resolve(value, info)
    if checked:
        from orchestrator.packaging import SPECIAL_ROOTS

        st = path.stat()
        if not stat.S_ISREG(st.st_mode) or any(str(path).startswith(r + "/") for r in SPECIAL_ROOTS):
            raise ValueError(f"{path} is not a regular file")
        if st.st_size > MAX_INPUT_FILE_BYTES:
            raise ValueError(f"{path} is {st.st_size / (1 << 20):,.0f} MiB (at most {MAX_INPUT_FILE_BYTES >> 20} MiB)")
    return path


LocalPath = Annotated[Path, AfterValidator(_existing_tree)]
LocalFile = Annotated[Path, AfterValidator(_existing_file)]


class Strict(BaseModel):
    # inf and nan are never a setting: .inf would pass validation and fail an apply
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class ModelSpec(Strict):
    """Where the model comes from: a local file or folder, or an Azure ML model URI."""

    path: LocalPath | None = Field(None, description="A local model file or folder.")
    uri: str | None = Field(
        None,
        description="azureml://subscriptions/<sub>/resourceGroups/<rg>/workspaces/<ws>/models/<name>/versions/<v>"
        " or azureml://registries/<registry>/models/<name>/versions/<v>",
        pattern=r"^azureml://(subscriptions/[^/]+/resourceGroups/[^/]+/workspaces/[^/]+|registries/[^/]+)"
        r"/models/[^/]+/versions/[^/]+$",
    )
    name: str | None = Field(None, description="Registered model name; defaults to the manifest name.")

    @model_validator(mode="after")
    def _one_source(self) -> ModelSpec:
        if (self.path is None) == (self.uri is None):
            raise ValueError("give exactly one of 'path' or 'uri'")
        return self


class EnvironmentSpec(Strict):
    python: str = Field("3.11", description="Python version of the scoring environment.", pattern=r"^3\.\d{1,2}$")
    requirements: LocalFile | None = Field(None, description="A pip requirements file.")
    conda_file: LocalFile | None = Field(None, description="An Azure ML style conda.yaml.")
    image: str | None = Field(None, description="Base image for container targets.")
    base_image: str | None = Field(None, description="Base of the image `deployctl image build` assembles (default: python:<python>-slim); it must have that Python.")
    dockerfile: LocalFile | None = Field(
        None, description="Your own Dockerfile for the environment of container targets (aci, app-service run: image): "
        "ACR Tasks builds it in the target's registry (its folder is the build context, rebuilt only when that "
        "folder changes) and deployctl layers its scoring runtime, the model and the code on that image. "
        "Its image must have environment.python. Not with base_image or image.")
    variables: dict[str, str] = Field(default_factory=dict, description="Environment variables for the scoring code.")

    @model_validator(mode="after")
    def _one_spec(self) -> EnvironmentSpec:
        if self.requirements is not None and self.conda_file is not None:
            raise ValueError("give at most one of 'requirements' or 'conda_file'")
        if self.dockerfile is not None and (self.base_image or self.image):
            raise ValueError("give either 'dockerfile' (its FROM is the base) or 'base_image'/'image', not both")
        return self


class CodeSpec(Strict):
    path: LocalPath = Field(description="Folder with the scoring code.")
    entry: str = Field("score.py", description="The scoring script, relative to 'path': init() + run(...).")

    @model_validator(mode="after")
    def _entry_exists(self, info: ValidationInfo) -> CodeSpec:
        if (info.context or {}).get("base_dir") is None:
            return self
        try:
            found = len(self.entry) <= MAX_PATH_CHARS and (self.path / self.entry).is_file()
        except (OSError, ValueError):  # a name too long for the filesystem, a NUL
            found = False
        if not found:
            raise ValueError(f"entry script {self.entry[:200]!r} not found in {self.path}")
        return self


class BatchSettings(Strict):
    """The Azure ML batch contract's knobs (same names as Azure ML's batch deployment)."""

    mini_batch_size: int = Field(10, ge=1, description="Files per run() call.")
    max_concurrency: int = Field(1, ge=1, le=64, description="Worker processes (per node on Azure).")
    error_threshold: int = Field(-1, ge=-1, description="Failed items tolerated before the job fails; -1: any.")
    max_retries: int = Field(3, ge=0, description="Retries of a failed mini-batch.")
    timeout_s: int = Field(60, ge=1, description="Seconds a mini-batch may take.")
    output_file: str = Field("predictions.csv", description="File the append_row output goes to.")


class QueueSettings(Strict):
    """Near-real-time scoring: a durable queue and workers."""

    workers: int = Field(1, ge=1, le=64)
    visibility_timeout_s: int = Field(60, ge=1, description="Seconds before an unfinished message is redelivered.")
    max_attempts: int = Field(5, ge=1, description="Deliveries before a message is dead-lettered.")
    mode: Literal["queue", "durable"] = Field(
        "queue", description="queue: a durable queue and workers (the local target always uses its own); "
        "durable: Durable Functions' async HTTP pattern (functions target).")


class ScoringSpec(Strict):
    type: ScoringType = Field(description="real-time | near-real-time | batch")
    sample_request: LocalFile | None = Field(None, description="Smoke test sent after every apply.")
    # Frozen models, so one shared default instance is safe.
    batch: BatchSettings = BatchSettings()
    queue: QueueSettings = QueueSettings()


Auto = Literal["auto"]


class ResourcesSpec(Strict):
    memory_gb: float | Auto = Field("auto", description="GiB of memory, or auto (sized from the model).")
    cpu: float | Auto = Field("auto", description="vCPUs, or auto.")
    gpu: int = Field(0, ge=0, description="GPUs.")

    @field_validator("memory_gb", "cpu")
    @classmethod
    def _positive(cls, v: Any) -> Any:
        if v != "auto" and v <= 0:
            raise ValueError("must be positive, or 'auto'")
        return v


class TargetConfig(Strict):
    """Settings every target has. A plugin subclasses this with ``kind: Literal["<its kind>"]``."""

    name: str = Field(pattern=r"^[a-z][a-z0-9-]{0,23}$", description="Unique within the manifest.")
    kind: str


class Manifest(Strict):
    """A whole manifest. ``targets`` is typed by the installed plugins at validation time."""

    apiVersion: Literal["deployctl/v1"] = Field(description="Always deployctl/v1.")  # noqa: N815
    name: str = Field(pattern=NAME_PATTERN, description="DNS-safe; prefixes every resource deployctl creates.")
    model: ModelSpec
    environment: EnvironmentSpec = EnvironmentSpec()
    code: CodeSpec
    scoring: ScoringSpec
    resources: ResourcesSpec = ResourcesSpec()
    targets: list[SerializeAsAny[TargetConfig]] = Field(min_length=1)

    def target(self, name: str) -> TargetConfig:
        for t in self.targets:
            if t.name == name:
                return t
        raise KeyError(name)


def dns_name(*parts: str, max_len: int = 32) -> str:
    """Join parts into a DNS-safe resource name no longer than ``max_len``."""
    name = re.sub(r"[^a-z0-9-]+", "-", "-".join(parts).lower()).strip("-")
    return name[:max_len].rstrip("-")
