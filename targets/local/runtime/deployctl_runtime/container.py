"""The entry point of a deployctl container image: the same server as the ``local`` target.

    python3 -m deployctl_runtime.container

Everything comes from the environment, as container platforms pass it: the scoring key from
``DEPLOYCTL_SCORING_KEY`` (ACI ``secureValue``, App Service setting; written to a private file,
never to the command line), the port from ``PORT`` (default 5001, Azure ML's), the address from
``DEPLOYCTL_HOST`` (default 0.0.0.0), the workers from ``WORKER_COUNT`` (azmlinfsrv's name), the
code from ``DEPLOYCTL_CODE_DIR`` / ``DEPLOYCTL_ENTRY`` and the model from ``AZUREML_MODEL_DIR``
(set in the image's config).  Routes, auth and answers are those of ``local``: ``GET /`` health,
``GET /ready``, ``POST /score`` with ``Authorization: Bearer <key>``.
"""

from __future__ import annotations

import os
import sys
import tempfile

from deployctl_runtime import server


def main() -> int:
    state = tempfile.mkdtemp(prefix="deployctl-")
    argv = ["--code", os.environ.get("DEPLOYCTL_CODE_DIR", "/opt/deployctl/code"),
            "--entry", os.environ.get("DEPLOYCTL_ENTRY", "score.py"),
            "--status-file", os.path.join(state, "status.json"),
            "--public-now", "--public-port", os.environ.get("PORT", "5001"),
            "--host", os.environ.get("DEPLOYCTL_HOST", "0.0.0.0"),
            "--workers", os.environ.get("WORKER_COUNT", "1")]
    key = os.environ.pop("DEPLOYCTL_SCORING_KEY", "")  # not inherited by the user's code
    if key:
        path = os.path.join(state, "key")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(key)
        argv += ["--key-file", path]
    return server.main(argv)


if __name__ == "__main__":
    sys.exit(main())
