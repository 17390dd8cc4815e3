"""What every Azure target shares, whatever service it deploys to.

:mod:`.session` (credential, transport, HTTP retry policy: one per run), :mod:`.base`
(``AzureTarget``), :mod:`.ops` (the operation runner and probes), :mod:`.errors` (typed errors),
:mod:`.budgets` (retry budgets per kind of operation), :mod:`.arm` (plain ARM requests, quota
rows of any provider), :mod:`.quota` (quota arithmetic, summed across targets), :mod:`.rollout`
(stepped traffic shift with health gates), :mod:`.simulator` (``--simulate``).  Nothing here
imports an Azure SDK at module import; clients are built on demand.  Service-specific code (SKU
catalogs, entities) stays with the targets that own it.
"""

from orchestrator.azure.session import AzureSession

__all__ = ["AzureSession"]
