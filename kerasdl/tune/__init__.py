"""Hyper-parameter search on Optuna: ``kerasdl tune RECIPE --space SPACE.yaml --trials N``.

Modules:
    space: the space file (dotted recipe keys -> distributions), checked against the recipe
        schema before any trial (no TensorFlow, no Optuna at import).
    storage: the study's storage (RDB or journal file), the study and its pruner, and the
        recovery of trials left RUNNING by a tuner that died (imports Optuna).
    tuner: trials as ordinary runs (:func:`kerasdl.training.runner.train`) with a pruning
        callback, in an ask-and-tell loop shared by every tuner of the study (imports Keras).
    report: ``best.yaml``, ``trials.csv`` and the plots.

See docs/tune.md. Reference: Akiba et al. 2019, "Optuna: A Next-generation Hyperparameter
Optimization Framework" (KDD).
"""
