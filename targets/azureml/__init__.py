"""Azure ML targets: ``online-endpoint`` (managed online endpoints), ``aks`` (Kubernetes online
endpoints on an attached Kubernetes compute) and ``batch-endpoint`` (batch endpoints on an
AmlCompute cluster), on azure-ai-ml.

Modules: :mod:`.config` (manifest settings, no Azure imports), :mod:`.spec` (desired resources,
pure), :mod:`.catalog` (the Azure ML SKU catalog), :mod:`.client` (the MLClient through the run's
AzureSession), :mod:`.assets` (content-addressed uploads), :mod:`.base` (workspace, sizing,
quota), :mod:`.store` (the asset store), :mod:`.models` (model copies and registry shares),
:mod:`.capacity` (AKS cluster capacity, pure),
:mod:`.online`, :mod:`.aks`, :mod:`.batch`, :mod:`.scoring`.  Azure SDKs are imported inside
methods only.  What every Azure target shares (session, operation runner, typed errors, ARM,
quota, stepped rollout) is :mod:`orchestrator.azure`.
"""
