"""Azure plumbing shared by every Azure target: credentials, transport, retry policy.

Nothing here imports an Azure SDK at module import; clients are built on demand.
"""

from orchestrator.azure.session import AzureSession

__all__ = ["AzureSession"]
