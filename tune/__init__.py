"""Hyperparameter sweeps: Ray Tune over Ray Train trials, Optuna search, ASHA, MLflow parent/child runs."""
