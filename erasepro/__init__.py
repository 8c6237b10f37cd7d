"""The ``erasepro`` namespace for things a *user* of the service imports: :mod:`erasepro.client` (httpx only).

The library is :mod:`erasepro_core`; the service is ``app``, ``worker`` and ``erasepro_jobs``."""
