"""Hyperparameter search on Optuna: a `search:` block in a sweep file.

plan      the trials' parameters and configs, checked against the base (TensorFlow- and Optuna-free)
study     the Optuna study: the exact budget, claiming trials, re-queuing those whose worker died
storage   storage URLs (passwords kept out of everything written), SQLite settings
samplers  the sampler and pruner as Optuna objects
heartbeat a running trial's heartbeat thread
worker    the warm in-process trial loop (one TensorFlow import for many trials) and pruning
report    the study's summary: table, sweep.jsonl/csv, history and importance plots, report.html
command   `nnrun sweep FILE` / `--worker` for a search sweep
"""
