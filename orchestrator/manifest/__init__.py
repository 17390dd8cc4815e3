"""The manifest: model (pydantic), YAML source with positions, validation and JSON Schema."""

from orchestrator.manifest.model import Manifest, ScoringType, TargetConfig
from orchestrator.manifest.validate import LoadedManifest, load_manifest

__all__ = ["LoadedManifest", "Manifest", "ScoringType", "TargetConfig", "load_manifest"]
