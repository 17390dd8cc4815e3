"""``kind: aci`` — real-time scoring on Azure Container Instances from deployctl's own image."""

from targets.aci.target import AciTarget

__all__ = ["AciTarget"]
