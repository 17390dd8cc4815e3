"""Container images without a Docker daemon, assembled the way jib and ko do.

- :mod:`~orchestrator.images.layers` — reproducible layer tars (sorted entries, fixed mtimes and
  owners, gzip without timestamps): equal inputs give equal digests.  Cached by content.
- :mod:`~orchestrator.images.oci` — pure OCI manifest and config assembly.
- :mod:`~orchestrator.images.registry` — the OCI distribution API (blob-exists checks, uploads,
  manifests, token exchange); plain HTTP only for loopback registries.
- :mod:`~orchestrator.images.build` — :func:`build_image`: base + environment + runtime + model +
  code → an image reference by digest and a per-layer report.  Container targets call it.
"""
