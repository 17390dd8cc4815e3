"""Target plugins: one sub-package per target kind.

Each implements :class:`orchestrator.target.Target` and is registered in pyproject.toml under
the ``deployctl.targets`` entry-point group, the same way a third-party plugin registers:

- ``targets.local``   — ``kind: local``: serve, queue and batch-score on this machine (no Azure, no Docker)
- ``targets.azureml`` — ``kind: online-endpoint | aks | batch-endpoint``: Azure ML endpoints

A target may touch only its own resources (those tagged with the manifest and target names)
and files under its ``TargetContext.state_dir``.
"""
