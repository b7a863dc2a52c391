"""Ray's nodes and what lives on them: joining a cluster (``cluster``), what a trial asks of it (``resources``), a
trial's resumable state on the driver's disk (``keeper``, ``node_files``, ``files``), warm worker slots
(``warmup``), a worker process serving task after task (``worker_process``), a node's quiet moment for timing
(``quiet``) and stopping cleanly (``interrupt``)."""
