"""How long each kind of Azure operation may keep being retried, and why.  Pure data.

azure-core's ``RetryPolicy`` retries each HTTP call a few times within seconds (4 attempts).
That is too short for two things Azure does routinely:

- a throttled or briefly unavailable read (429/5xx) outlasting four quick attempts: a GET, a
  list, a ``listKeys`` or a create-or-update PUT is idempotent, so the whole operation is simply
  run again (``idempotent=True`` makes :func:`orchestrator.azure.ops.run_op` retry transient
  statuses that azure-core gave up on);
- a resource busy with another operation (409 "Updating", ``OperationCanceled``): an Azure ML
  online endpoint stays "Updating" for as long as one of its deployments is being created or
  updated, which Azure ML documents as taking several minutes and up to ~15-20 minutes for large
  images (az ml's own ``--no-wait``-less create waits that long).  Writes that can meet that wait
  up to 30 minutes, polling at most every 30 s.

Budgets are measured on the session's clock: the simulator's virtual clock under ``--simulate``,
so a simulated 30-minute wait costs no real time.  Each budget says itself in the plan's notes
(:func:`describe`).
"""

from __future__ import annotations

from dataclasses import dataclass

from orchestrator.retry import RetrySettings


@dataclass(frozen=True)
class Budget:
    name: str
    settings: RetrySettings
    idempotent: bool
    why: str

    def describe(self) -> str:
        s = self.settings
        return (f"{self.name}: up to {s.attempts} attempts within {_duration(s.max_elapsed)} "
                f"(waits {s.initial_wait:g}-{s.max_wait:g}s{', on transient HTTP errors too' if self.idempotent else ''})"
                f" — {self.why}")


def _duration(seconds: float) -> str:
    return f"{seconds / 60:g} min" if seconds >= 120 else f"{seconds:g}s"


READ = Budget("reads and idempotent writes", RetrySettings(attempts=10, initial_wait=1.0, max_wait=20.0,
                                                           max_elapsed=180.0), idempotent=True,
              why="ARM throttling (429) clears within its Retry-After; a 5xx that outlasts azure-core's 4 "
                  "quick attempts usually clears within a minute")
PROVISION = Budget("endpoint and deployment writes", RetrySettings(attempts=80, initial_wait=2.0, max_wait=30.0,
                                                                  max_elapsed=1800.0), idempotent=True,
                   why="an endpoint stays 'Updating' (409) while a deployment is created or updated, which Azure ML "
                       "documents as several minutes, up to ~20 for large images")
PROBE = Budget("smoke tests and health checks", RetrySettings(attempts=6, initial_wait=1.0, max_wait=10.0,
                                                             max_elapsed=60.0), idempotent=True,
               why="a scoring request answered 429/502/503/504 (or a 500 not raised by run()) is the endpoint's "
                   "front door being busy, not the model failing")

ONCE = Budget("submissions", RetrySettings(), idempotent=False,
              why="a POST that starts something (a batch job) is not sent again after a 5xx that may have "
                  "started it; only 409 busy and canceled operations are retried")

ALL = (READ, PROVISION, PROBE)


def notes(budgets: tuple[Budget, ...] = ALL) -> str:
    return "retries: " + "; ".join(b.describe() for b in budgets)
