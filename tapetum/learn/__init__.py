"""Learning from data: training the models Tapetum runs (``tapetum train``).

Each trainer lives in its own module and imports its heavy framework (torch) only when it
trains, so ``import tapetum.learn`` stays light:

* :mod:`tapetum.learn.forecast`: the learned trajectory forecaster (MOTChallenge
  ground-truth tracks → an ONNX file for :class:`tapetum.track.forecast_model.LearnedForecaster`).
"""
