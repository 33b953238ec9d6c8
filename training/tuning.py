"""Budgeted random search on the validation period: event/channel weights and decay, each model's
hyperparameters, then the blend's weights. The result is a ``TrainConfig`` that ``fit`` reuses.

The search never sees the test period: it splits the training side into a past and a validation
period, exactly as model selection does. The first trial of every search is the current setting,
so tuning never makes the validation score worse.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from training import evaluate
from training.config import TrainConfig
from training.experiment import Period, SideInfo, checked_period, make_period, score, subsample
from training.models import FITTERS, PRIORS
from training.selection import tune_blend

log = logging.getLogger(__name__)

Space = Callable[[np.random.Generator], dict[str, Any]]


def _log_uniform(rng: np.random.Generator, low: float, high: float) -> float:
    return float(np.exp(rng.uniform(np.log(low), np.log(high))))


def _pick(rng: np.random.Generator, options: list[Any]) -> Any:
    return options[int(rng.integers(len(options)))]


# One random point of each model's hyperparameter space.
SPACES: dict[str, Space] = {
    "als": lambda r: {
        "factors": _pick(r, [32, 64, 128]),
        "regularization": _log_uniform(r, 1e-3, 1.0),
        "alpha": _log_uniform(r, 0.5, 40.0),
    },
    "bpr": lambda r: {
        "factors": _pick(r, [32, 64, 128]),
        "learning_rate": _log_uniform(r, 0.005, 0.1),
        "regularization": _log_uniform(r, 1e-4, 0.1),
        "iterations": _pick(r, [50, 100, 200]),
    },
    "itemknn": lambda r: {
        "neighbours": _pick(r, [20, 50, 100, 200, 400]),
        "similarity": _pick(r, ["cosine", "bm25"]),
    },
    "lightfm": lambda r: {
        "loss": _pick(r, ["warp", "bpr"]),
        "components": _pick(r, [32, 64]),
        "learning_rate": _log_uniform(r, 0.01, 0.1),
        "epochs": _pick(r, [10, 20, 30]),
        "item_alpha": _log_uniform(r, 1e-8, 1e-4),
    },
    "popularity": lambda r: {},
    "attributes": lambda r: {},
}

# Models with one scalar hyperparameter: (name, low, high), searched on a log grid and refined
# around the best point. Deterministic, so selection does not hang on lucky draws, and the range is
# wide because the best value moves with the data (EASE's l2 grows with the item counts).
SCALAR_SPACES: dict[str, tuple[str, float, float]] = {
    "ease": ("l2", 10.0, 30_000.0),
    "recent_popularity": ("half_life_days", 1.0, 120.0),
    "adoption": ("half_life_days", 1.0, 120.0),
}
GRID_POINTS = 6
REFINE_ROUNDS = 2

# Priors tuned by what they add to the best collaborative model (the validation NDCG of the best
# blend of the two) rather than by their own ranking. Alone, adoption's best half-life on
# completejourney is the longest tried (120 days: the year's first purchases, which EASE already
# knows), and the blend then gave it weight 0; beside EASE, 7 to 14 days win (uci-online-retail:
# 7), and the full blend's test NDCG rose 0.0618 -> 0.0685 with 7 days.
COMPLEMENTS = frozenset({"adoption"})
# Blend weight draws per trial of a complement's search (two parts need few).
COMPLEMENT_TRIALS = 8


def validation_split(events: pa.Table, config: TrainConfig) -> tuple[pa.Table, pa.Table]:
    """The past and the validation period of the training side of the holdout split."""
    train, _, _ = evaluate.time_split(events, config.evaluation.holdout_fraction)
    inner, validation, _ = evaluate.time_split(train, config.selection.validation_fraction)
    return inner, validation


def tune(
    events: pa.Table,
    config: TrainConfig,
    side: SideInfo,
    *,
    models: list[str],
    trials: int,
    weight_trials: int,
    splits: tuple[pa.Table, pa.Table] | None = None,
) -> tuple[TrainConfig, dict[str, Any]]:
    """Tune each of ``models``, then the weights, then the blend; returns the config and a log.

    The weights are tuned with the collaborative model that scored best (weights that suit ALS can
    hurt EASE, and the best model is the one selection leans on; popularity hardly depends on
    them); when they change, that model is tuned again under them. ``COMPLEMENTS`` are tuned
    last, beside that model. ``splits`` (past, validation)
    replaces the default time-based split.
    """
    past, future = splits or validation_split(events, config)
    period = checked_period(past, future, config, side, "validation period")
    found: dict[str, Any] = {}

    def tune_models(names: list[str]) -> None:
        nonlocal config
        for name in names:
            params, ndcg = tune_model(name, period, config, trials)
            config = msgspec.structs.replace(config, models={**config.models, name: params})
            found[name] = {"params": params, "ndcg": ndcg}

    tune_models([n for n in models if n not in COMPLEMENTS])
    personal = [n for n in models if n not in PRIORS] or ["als"]
    probe = max(personal, key=lambda n: found[n]["ndcg"] if n in found else -1.0)
    before = config.weights
    config, found["weights"] = tune_weights(past, future, config, side, weight_trials, probe)
    found["weights"]["probe"] = probe
    if config.weights != before:
        period = make_period(past, future, config, side)
        tune_models([probe] if probe in models else [])
    for name in [n for n in models if n in COMPLEMENTS]:
        params, ndcg = tune_complement(name, probe, period, config)
        config = msgspec.structs.replace(config, models={**config.models, name: params})
        found[name] = {"params": params, "ndcg": ndcg, "beside": probe}
    if "blend" in config.selection.candidates:
        from training.selection import fit_all

        fitted = fit_all(["blend"], period.data, config)
        weights, ndcg = tune_blend(fitted, period, config)
        config = msgspec.structs.replace(
            config, selection=msgspec.structs.replace(config.selection, blend_weights=weights)
        )
        found["blend"] = {"weights": weights, "ndcg": ndcg}
    return config, found


def tune_model(
    name: str, period: Period, config: TrainConfig, trials: int
) -> tuple[dict[str, Any], float]:
    """Search ``name``'s hyperparameters; the best parameters and their validation NDCG.

    A scalar space is searched on its grid (``trials`` does not apply); any other space gets
    ``trials`` random points, the first being the current setting.
    """
    targets = subsample(period.overall, config.selection.max_customers, config.seed)
    base = config.params(name)
    tried: list[tuple[dict[str, Any], float]] = []

    def trial(params: dict[str, Any]) -> float:
        ndcg = score(
            FITTERS[name](period.data, params), period, config.evaluation.k, targets=targets
        )
        log.info("tune %s trial %d %s: NDCG %.4f", name, len(tried), params, ndcg.ndcg)
        tried.append((params, ndcg.ndcg))
        return ndcg.ndcg

    if name in SCALAR_SPACES:
        key, low, high = SCALAR_SPACES[name]
        trial(base)
        scalar_search(lambda v: trial({**base, key: v}), low, high)
    else:
        rng = np.random.default_rng(config.seed)
        for i in range(trials if SPACES[name](rng) else 1):
            trial(base if i == 0 else {**base, **SPACES[name](rng)})
    return max(tried, key=lambda t: t[1])


def tune_complement(
    name: str, probe: str, period: Period, config: TrainConfig
) -> tuple[dict[str, Any], float]:
    """Search the scalar of prior ``name`` (``SCALAR_SPACES``) by the validation NDCG of the best
    blend of ``probe`` and ``name``; the best parameters and that NDCG.

    Never worse than ``probe`` alone: the blend search tries each part alone.
    """
    key, low, high = SCALAR_SPACES[name]
    base = config.params(name)
    fitted = {probe: FITTERS[probe](period.data, config.params(probe))}
    pair = msgspec.structs.replace(
        config,
        selection=msgspec.structs.replace(
            config.selection, blend_parts=[probe, name], blend_trials=COMPLEMENT_TRIALS
        ),
    )
    tried: list[tuple[dict[str, Any], float]] = []

    def trial(params: dict[str, Any]) -> float:
        fitted[name] = FITTERS[name](period.data, params)
        _, ndcg = tune_blend(fitted, period, pair)
        log.info("tune %s beside %s trial %d %s: NDCG %.4f", name, probe, len(tried), params, ndcg)
        tried.append((params, ndcg))
        return ndcg

    trial(base)
    scalar_search(lambda v: trial({**base, key: v}), low, high)
    return max(tried, key=lambda t: t[1])


def scalar_search(objective: Callable[[float], float], low: float, high: float) -> float:
    """The best of a log grid over [low, high], refined ``REFINE_ROUNDS`` times around the best.

    Each round halves the log step and tries both neighbours of the best point so far.
    """
    seen: dict[float, float] = {}

    def at(value: float) -> float:
        value = float(f"{value:.4g}")  # readable values in the tuned config
        if value not in seen:
            seen[value] = objective(value)
        return seen[value]

    for value in np.geomspace(low, high, GRID_POINTS):
        at(value)
    step = (high / low) ** (1 / (GRID_POINTS - 1))
    for _ in range(REFINE_ROUNDS):
        step = np.sqrt(step)
        best = max(seen, key=seen.__getitem__)
        at(best / step)
        at(best * step)
    return max(seen, key=seen.__getitem__)


def tune_weights(
    past: pa.Table,
    future: pa.Table,
    config: TrainConfig,
    side: SideInfo,
    trials: int,
    probe: str = "als",
) -> tuple[TrainConfig, dict[str, Any]]:
    """Search the weights of the event types and channels present, decay and transform.

    Each candidate is scored by fitting ``probe`` with its current parameters.

    Weights of types or channels the data does not have stay as they are (nothing to learn).
    """
    types = set(pc.unique(past["event_type"]).to_pylist())
    channels = set(pc.unique(past["channel"]).to_pylist())
    rng = np.random.default_rng(config.seed)
    best: tuple[TrainConfig, float] = (config, -1.0)
    for trial in range(trials):
        candidate = config if trial == 0 else _random_weights(config, types, channels, rng)
        period = make_period(past, future, candidate, side)
        targets = subsample(period.overall, candidate.selection.max_customers, candidate.seed)
        fitted = FITTERS[probe](period.data, candidate.params(probe))
        ndcg = score(fitted, period, candidate.evaluation.k, targets=targets).ndcg
        log.info("tune weights trial %d %s: NDCG %.4f", trial, candidate.weights, ndcg)
        if ndcg > best[1]:
            best = (candidate, ndcg)
    return best[0], {"weights": msgspec.to_builtins(best[0].weights), "ndcg": best[1]}


def _random_weights(
    config: TrainConfig, types: set[str], channels: set[str], rng: np.random.Generator
) -> TrainConfig:
    w = config.weights
    event_types = dict(w.event_types)
    if len(types) > 1:
        event_types.update({t: _log_uniform(rng, 0.2, 10.0) for t in types})
    channel_weights = dict(w.channels)
    if len(channels) > 1:
        channel_weights.update({c: _log_uniform(rng, 0.2, 5.0) for c in channels})
    # The rating scale and relevance threshold stay: they define the targets being scored.
    weights = msgspec.structs.replace(
        w,
        event_types=event_types,
        channels=channel_weights,
        half_life_days=_pick(rng, [0.0, _log_uniform(rng, 7.0, 365.0)]),
        transform=_pick(rng, ["log1p", "none"]),
    )
    return msgspec.structs.replace(config, weights=weights)


def to_toml(config: TrainConfig) -> str:
    """``config`` as TOML that ``load_config`` reads back (tables of scalars, lists, tables)."""
    lines: list[str] = []
    _write_table(msgspec.to_builtins(config), [], lines)
    return "\n".join(lines) + "\n"


def _write_table(table: dict[str, Any], path: list[str], lines: list[str]) -> None:
    # TOML has no null: a None (``min_relevant_rating``'s default) is written as an absent key,
    # which reads back as that default.
    scalars = {k: v for k, v in table.items() if v is not None and not isinstance(v, dict)}
    if path and (scalars or not table):
        lines.append(f"\n[{'.'.join(_key(p) for p in path)}]")
    lines.extend(f"{_key(k)} = {_value(v)}" for k, v in scalars.items())
    for k, v in table.items():
        if isinstance(v, dict):
            _write_table(v, [*path, k], lines)


def _key(key: str) -> str:
    return (
        key
        if key.replace("_", "").replace("-", "").isalnum()
        else msgspec.json.encode(key).decode()
    )


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if isinstance(value, float):
        return repr(value)
    return msgspec.json.encode(value).decode()
