"""Azure ML targets: ``online-endpoint`` (managed online endpoints), ``aks`` (Kubernetes online
endpoints on an attached Kubernetes compute) and ``batch-endpoint`` (batch endpoints on an
AmlCompute cluster), on azure-ai-ml.

Modules: :mod:`.config` (manifest settings, no Azure imports), :mod:`.spec` (desired resources,
pure), :mod:`.rollout` (blue/green steps, pure + loop), :mod:`.client` (clients through one
AzureSession, operation retries), :mod:`.assets` (content-addressed uploads), :mod:`.base`
(assets, model copies, sizing, quota), :mod:`.capacity` (AKS cluster capacity, pure),
:mod:`.online`, :mod:`.aks`, :mod:`.batch`, :mod:`.scoring`.  Azure SDKs are imported inside
methods only.
"""
