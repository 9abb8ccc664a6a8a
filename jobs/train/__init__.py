"""Training on Ray Train: the driver (``run``) hands a typed ``LoopConfig`` to the worker loop (``loop``), which
checkpoints as it goes (``checkpoints``); the finished run becomes a registry version (``register``). ``policy``
says when the nightly flow retrains; ``data`` is what the workers iterate and what the data decides."""
