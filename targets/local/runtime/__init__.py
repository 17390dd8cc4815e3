"""The stdlib-only scoring runtime (see deployctl_runtime); a package so deployctl can import its queue."""
