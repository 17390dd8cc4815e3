"""The scoring key of a target whose platform has none (ACI, App Service running deployctl's
runtime): made here, kept in the target's state folder (0600), handed to the platform as a secret
value (a secure environment variable, an app setting) that deployctl's runtime checks.  Only a
fingerprint ever reaches a spec or a plan; the key itself is registered with ``ctx.secret`` the
moment it is read, so it is masked everywhere.  Rotate it by deleting the file and applying.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from pathlib import Path
from typing import Any

from orchestrator.state import write_atomic

KEY_ENV = "DEPLOYCTL_SCORING_KEY"  # what deployctl_runtime.container reads


class ScoringKey:
    def __init__(self, ctx: Any) -> None:
        self.ctx = ctx

    @property
    def file(self) -> Path:
        return Path(self.ctx.state_dir) / "scoring-key"

    def read(self) -> str | None:
        try:
            key = self.file.read_text().strip()
        except OSError:
            return None
        if key:
            self.ctx.secret(key)
        return key or None

    def ensure(self) -> str:
        """The key, made (and written, before anything can use it) when there is none."""
        key = self.read()
        if key is None:
            key = secrets.token_urlsafe(32)
            self.ctx.secret(key)
            write_atomic(self.file, key)
            os.chmod(self.file, 0o600)
        return key

    @staticmethod
    def fingerprint(key: str) -> str:
        return hashlib.sha256(key.encode()).hexdigest()[:12]

    def spec_value(self) -> str:
        """What a spec shows: the fingerprint, or that the key is made on apply."""
        key = self.read()
        return self.fingerprint(key) if key else "(made on apply)"
