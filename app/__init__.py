"""ErasePro HTTP front end (FastAPI).

Nothing in this package imports torch, directly or transitively: the API process validates requests,
keeps job records in Redis, enqueues worker functions by name and serves artifacts from disk.
The ASGI application lives in :mod:`app.main`.
"""
