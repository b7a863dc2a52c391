"""Training: the one loop (``loop.fit``) and what it builds from a trial config.

Nothing here knows about Ray or Optuna: ``loop`` (fit, evaluate), ``models`` and ``nets`` (networks),
``losses``, ``augment``, ``metrics``, ``weights`` (offline pretrained encoders), ``checkpoint``.
"""
