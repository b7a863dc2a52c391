"""segtune: hyperparameter search for semantic segmentation on Ray Tune, Optuna and ASHA."""

import os

# albumentations asks the network for a newer version on import unless told not to; segtune is offline-first.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
# Pretrained weights come from the local caches: a search must never stall on a download in every
# trial at once. SEGTUNE_DOWNLOAD_WEIGHTS=1 (e.g. for one `segtune check` with network) allows it.
if os.environ.get("SEGTUNE_DOWNLOAD_WEIGHTS") != "1":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

__version__ = "0.1.0"
