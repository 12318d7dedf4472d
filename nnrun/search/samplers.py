"""The search block's sampler and pruner, as Optuna objects; each trial samples with a seed of
its own."""

from __future__ import annotations

import numpy as np

from nnrun.search.plan import SearchPlan


def sampler_seed(seed: int, number: int) -> int:
    """Trial N samples with its own seed: one worker reproduces a study, and several workers
    (each with its own sampler) do not draw the same values."""
    return int(np.random.SeedSequence([seed, number]).generate_state(1)[0])


def make_sampler(plan: SearchPlan, seed: int):
    import optuna

    spec = plan.spec
    if spec.sampler == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=10 if spec.startup_trials is None
                                          else spec.startup_trials)
    if spec.sampler == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed, n_startup_trials=1 if spec.startup_trials is None
                                            else spec.startup_trials, warn_independent_sampling=False)
    return optuna.samplers.RandomSampler(seed=seed)  # random; grid trials have their values fixed


def make_pruner(plan: SearchPlan):
    import optuna

    p = plan.spec.pruner
    if p.name == "median":
        # Steps are epochs counted from 1; Optuna prunes from step n_warmup_steps on.
        return optuna.pruners.MedianPruner(n_startup_trials=p.startup_trials, n_warmup_steps=p.warmup_epochs + 1)
    if p.name == "hyperband":
        searched = any(x.key == "train.epochs" for x in plan.params)
        return optuna.pruners.HyperbandPruner(min_resource=p.min_epochs, reduction_factor=p.reduction_factor,
                                              max_resource="auto" if searched else plan.base_cfg.train.epochs)
    return optuna.pruners.NopPruner()
