"""The names the API enqueues (``worker.jobs.run_erasure`` etc., see :data:`erasepro_jobs.settings.JOB_FUNCTIONS`):
each job's body lives in its own module, :mod:`worker.erasure`, :mod:`worker.generation`, :mod:`worker.export`
(and :mod:`worker.evaluate`); the shared runner in :mod:`worker.runner`. Kept as one table of names so jobs
already queued keep resolving."""

from worker.erasure import run_erasure
from worker.export import run_export
from worker.generation import run_generation

__all__ = ["run_erasure", "run_export", "run_generation"]
