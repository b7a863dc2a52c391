"""segtune: hyperparameter search for semantic segmentation on Ray Tune, Optuna and ASHA.

Importing it sets nothing in the process (environment, loggers, warning filters): a command sets what it needs while
it runs (segtune/environment.py)."""

__version__ = "0.1.0"
