"""ErasePro's job domain, shared by the API (``app``) and the workers (``worker``); never imports torch.

One room per concern:

* :mod:`erasepro_jobs.settings` — every knob of the service (pydantic-settings, read from ``ERASEPRO_*``).
* :mod:`erasepro_jobs.store` — the Redis key layout of job records.
* :mod:`erasepro_jobs.lifecycle` — the only place a job changes status (Lua transitions, event log, deliveries).
* :mod:`erasepro_jobs.registry` — which base models exist and whether they are installed.
* :mod:`erasepro_jobs.webhooks` — Standard Webhooks signing, target checks (pinned addresses) and delivery queues.
* :mod:`erasepro_jobs.endpoints` — tenant webhook endpoints (``/v1/webhook-endpoints``), their secrets and rotation.
* :mod:`erasepro_jobs.evaluations` — robustness-evaluation records.
"""
