"""What runs in a trial's worker process: one trial is one `fit` reporting to Tune (``trainable``), after its model's
costs are measured (``costs``)."""
