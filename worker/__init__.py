"""ErasePro worker: RQ job functions, the model cache, and the worker process (see :mod:`worker.main`)."""
