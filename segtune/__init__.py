"""segtune: hyperparameter search for semantic segmentation on Ray Tune, Optuna and ASHA."""

import os

# albumentations asks the network for a newer version on import unless told not to; segtune is offline-first.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

__version__ = "0.1.0"
