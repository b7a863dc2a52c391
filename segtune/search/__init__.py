"""The search: Ray Tune schedules, Optuna samples, the store tells the truth.

At the top, the driver's pipeline: ``run`` (``run_study``, a page of named steps), ``tune_run`` (the Tune
experiment one run is, and how it ends), ``progress`` (its lines), ``interrupt`` (Ctrl-C / SIGTERM) and
``ray_trials`` (what the driver and a trial say to each other through Ray's config). Below it, one folder per
sub-concept, each importing only downward (tests/test_layers.py):

- ``scheduling/``: when trials stop and what is tried next (rungs, defaults, searcher, transfer, replay);
- ``store/``: what the search keeps (the study store's face, writer, recorder, budget, resume, comparable,
  artifacts);
- ``nodes/``: Ray's nodes and what lives on them (cluster, resources, keeper, warm-up, quiet);
- ``trial/``: what runs in a trial's worker (trainable, costs).
"""
