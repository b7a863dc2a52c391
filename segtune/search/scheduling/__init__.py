"""When trials stop and what is tried next: the rung policy (``rungs``, ASHA with pauses and promotion), the `auto`
settings (``defaults``), the budget in trial-epochs (``budget``), the searcher that asks Optuna (``searcher``), what a
finished trial tells Optuna (``outcome``), earlier studies' winners (``transfer``) and the replay over recorded curves
that chose the defaults (``replay``)."""
