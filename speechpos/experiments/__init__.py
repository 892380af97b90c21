"""Measurements and experiments behind ``tools/`` and ``docs/``: not needed to train or use a model.

* :mod:`~speechpos.experiments.runs`: running recipes as subprocesses, a few at a time (the
  demo and the benchmarks), with the study's shared settings.
* :mod:`~speechpos.experiments.bench`: the position-leak probe and pretraining-step throughput.
* :mod:`~speechpos.experiments.plots`: reading training logs, plots and markdown reports.
"""
