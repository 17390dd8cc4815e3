"""deployctl's scoring runtime: runs INSIDE a deployment's own environment.

Standard library only (the environment holds the user's packages, not deployctl's), so it is put
on the environment's ``PYTHONPATH`` as-is.  Modules:

- :mod:`contract` — the Azure ML scoring contract: load score.py, ``init()`` once, ``run(...)``.
- :mod:`server` — the real-time / near-real-time HTTP server (Azure ML online endpoint routes).
- :mod:`queue` — the durable SQLite queue of near-real-time requests.
- :mod:`nrt_worker` — a near-real-time worker process.
- :mod:`batch` — the batch runner (Azure ML batch deployment contract).
- :mod:`zygote` — starts server versions as forks of a process that already imported the
  model's packages (warm starts: a code-only redeploy in well under a second).
"""
