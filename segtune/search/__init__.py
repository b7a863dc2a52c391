"""The search: Ray Tune schedules, Optuna samples, the store tells the truth.

``run`` (run_study), ``searcher`` (asks Optuna), ``trainable`` (one trial), ``recorder`` (Tune callbacks that
write the store and print progress), ``interrupt`` (Ctrl-C / SIGTERM), ``resume`` (--resume), ``store``
(retrying Optuna storages; the one module that touches Optuna's private storage API).
"""
