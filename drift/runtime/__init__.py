"""The service around the engine: ``drift serve``, checkpoints, HTTP, ``drift replay``, ``drift alerts``."""
