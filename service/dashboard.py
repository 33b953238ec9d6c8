"""The dashboard's data (online counters + the models' offline metrics) and its HTML page.

Both the admin route and ``python -m service.report`` build the same ``Dashboard``; the report
inlines it into the page so the file works without the service.
"""

from __future__ import annotations

import html
import json
import logging
from datetime import UTC, date, datetime
from importlib import resources
from pathlib import Path
from typing import Any

import msgspec

from service import artifact, measures
from service.experiments import Experiment, arm
from service.measures import ExperimentResult, Figures
from service.store import Store

log = logging.getLogger(__name__)

DATA_PLACEHOLDER = "null /*DASHBOARD_DATA*/"


class ChannelFigures(msgspec.Struct, frozen=True, kw_only=True):
    """Figures of one channel (``all``: every channel together)."""

    channel: str
    figures: Figures


class PlacementReport(msgspec.Struct, frozen=True, kw_only=True):
    """One placement's figures per channel where it was shown, and over all of them (``all``)."""

    placement: str
    channels: list[ChannelFigures]


class ModelReport(msgspec.Struct, frozen=True, kw_only=True):
    """One model version: its offline metrics from training and its online figures."""

    version: str
    role: str  # "live" or "previous"
    algorithm: str | None = None
    created_at: datetime | None = None
    offline: dict[str, float] = {}
    online: list[ChannelFigures] = []


class Dashboard(msgspec.Struct, frozen=True, kw_only=True):
    """Everything the dashboard page draws."""

    generated_at: datetime
    days: list[str]
    channels: list[str]
    channel_series: dict[str, dict[str, list[float | None]]]
    variant_series: dict[str, dict[str, list[float | None]]]
    coverage: list[float]
    catalogue_items: int
    channel_figures: list[ChannelFigures]
    # Configured placements by name, the rest as ``other``; answers without one are only in
    # ``channel_figures``.
    placements: list[PlacementReport]
    models: list[ModelReport]
    experiments: list[ExperimentResult]


async def build(
    store: Store,
    model_dir: str | Path,
    live_version: str | None,
    catalogue_items: int,
    *,
    days: int = 14,
    today: date | None = None,
) -> Dashboard:
    """Read the last ``days`` days of counters and the manifests, and compute every figure."""
    today = today or datetime.now(UTC).date()
    daily = await store.daily(today, days)
    experiments = await store.experiments()
    counters = measures.totals(daily)
    seen = measures.channels(counters, "all")
    return Dashboard(
        generated_at=datetime.now(UTC),
        days=[d.isoformat() for d, _, _ in daily],
        channels=seen,
        channel_series=measures.series(daily, "all", seen),
        variant_series=_variant_series(daily, experiments),
        coverage=measures.coverage(daily, catalogue_items),
        catalogue_items=catalogue_items,
        channel_figures=_by_channel(counters, "all"),
        placements=[
            PlacementReport(placement=p, channels=_by_channel(counters, f"placement:{p}"))
            for p in measures.placements(counters)
        ],
        models=_models(Path(model_dir), live_version, counters),
        experiments=[measures.experiment_result(e, counters) for e in experiments],
    )


def page(data: Dashboard | None = None) -> str:
    """The dashboard HTML; with ``data`` inlined it is a standalone report."""
    text = resources.files("service").joinpath("static/dashboard.html").read_text("utf-8")
    if data is None:
        return text
    # "</" is escaped so no value can close the script element.
    payload = json.dumps(msgspec.to_builtins(data)).replace("</", "<\\/")
    stamp = html.escape(data.generated_at.isoformat(timespec="seconds"))
    return text.replace(DATA_PLACEHOLDER, payload).replace("<!--GENERATED-->", stamp)


def _by_channel(counters: dict[str, float], dimension: str) -> list[ChannelFigures]:
    found = [
        ChannelFigures(channel=c, figures=measures.figures(counters, dimension, c))
        for c in measures.channels(counters, dimension)
    ]
    found.append(ChannelFigures(channel="all", figures=measures.figures(counters, dimension)))
    return found


def _variant_series(
    daily: measures.Daily, experiments: list[Experiment]
) -> dict[str, dict[str, list[float | None]]]:
    result: dict[str, dict[str, list[float | None]]] = {}
    for experiment in experiments:
        for variant in experiment.variants:
            dim = arm(experiment.experiment_id, variant.name)
            points = [measures.figures(counters, dim) for _, counters, _ in daily]
            result[f"{experiment.experiment_id}/{variant.name}"] = {
                "ctr": [f.ctr.value if f.impressions else None for f in points],
                "conversion": [f.conversion_rate.value if f.impressions else None for f in points],
            }
    return result


def _models(model_dir: Path, live: str | None, counters: dict[str, float]) -> list[ModelReport]:
    manifests = sorted(_manifests(model_dir), key=lambda m: m.created_at)
    versions = [m.model_version for m in manifests]
    chosen: list[tuple[str, artifact.Manifest]] = []
    if live in versions:
        index = versions.index(live)
        chosen.append(("live", manifests[index]))
        if index > 0:
            chosen.append(("previous", manifests[index - 1]))
    return [
        ModelReport(
            version=m.model_version,
            role=role,
            algorithm=m.algorithm,
            created_at=m.created_at,
            offline=_flatten(m.metrics),
            online=_by_channel(counters, f"model:{m.model_version}"),
        )
        for role, m in chosen
    ]


def _manifests(model_dir: Path) -> list[artifact.Manifest]:
    found = []
    for file in model_dir.glob(f"*/{artifact.MANIFEST}"):
        try:
            found.append(msgspec.json.decode(file.read_bytes(), type=artifact.Manifest))
        except (OSError, msgspec.DecodeError) as e:
            log.warning("manifest %s unreadable: %s", file, e)
    return found


def _flatten(metrics: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """Numeric leaves of the manifest's metrics as ``"als.ndcg": 0.21``."""
    flat: dict[str, float] = {}
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, name + "."))
        elif isinstance(value, int | float) and not isinstance(value, bool):
            flat[name] = float(value)
    return flat
