"""A/B tests: configure, list, stop and read results (scope ``admin``)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Annotated, get_args

import msgspec
from litestar import Controller, delete, get, post, put
from litestar.di import NamedDependency
from litestar.params import JSONBody, PathParameter, QueryParameter

from service import measures
from service.api.params import PathId
from service.api.responses import problems
from service.errors import InvalidRequest, ServiceError
from service.experiments import Experiment, ExperimentConfig, Name
from service.measures import ExperimentResult
from service.store import Store
from service.tracking import Tracking

Days = Annotated[int, QueryParameter(ge=1, le=400, description="Days of counters to sum")]
# A new experiment's id is a name (service/experiments.py); any other id is a 400 naming the path
# parameter, as the OpenAPI says (the other routes take any id: one no name matches is a 404).
_NAME = get_args(Name)[1]
NewExperimentId = Annotated[
    str,
    PathParameter(min_length=_NAME.min_length, max_length=_NAME.max_length, pattern=_NAME.pattern),
]


class UnknownExperiment(ServiceError):
    """No experiment has this id."""

    slug = "unknown-experiment"
    status = 404
    title = "Unknown experiment"


class ExperimentNotStarted(ServiceError):
    """Stopping an experiment that has not started: nothing runs that could be stopped."""

    slug = "experiment-not-started"
    status = 409
    title = "Experiment not started"


class ExperimentController(Controller):
    """A/B tests: configure, list, stop and read results (scope ``admin``)."""

    path = "/v1/experiments"
    opt = {"scope": "admin"}  # noqa: RUF012
    tags = ["experiments"]  # noqa: RUF012

    @get("/", operation_id="listExperiments", responses=problems())
    async def list_all(self, store: NamedDependency[Store]) -> list[Experiment]:
        """Every experiment, running or not."""
        return await store.experiments()

    @put("/{experiment_id:str}", operation_id="putExperiment", responses=problems(400, 413))
    async def put_one(
        self,
        experiment_id: NewExperimentId,
        data: JSONBody[ExperimentConfig],
        store: NamedDependency[Store],
        tracking: NamedDependency[Tracking],
    ) -> Experiment:
        """Create or replace an experiment; it applies to the next request on this replica.

        Other replicas pick it up within a second. Variant names are unique and ``stop`` is
        after ``start``; else a 400.
        """
        try:
            experiment = msgspec.convert(
                {**msgspec.to_builtins(data), "experiment_id": experiment_id}, Experiment
            )
        except msgspec.ValidationError as e:
            raise InvalidRequest(f"invalid experiment: {e}") from e
        await store.put_experiment(experiment)
        await tracking.reload_experiments()
        return experiment

    @get("/{experiment_id:str}", operation_id="getExperiment", responses=problems(400, 404))
    async def get_one(self, experiment_id: PathId, store: NamedDependency[Store]) -> Experiment:
        """One experiment's config."""
        return await _find(store, experiment_id)

    @post(
        "/{experiment_id:str}/stop",
        status_code=200,
        operation_id="stopExperiment",
        responses=problems(400, 404, 409),
    )
    async def stop(
        self,
        experiment_id: PathId,
        store: NamedDependency[Store],
        tracking: NamedDependency[Tracking],
    ) -> Experiment:
        """Stop an experiment now (its config and counters are kept).

        One already stopped keeps its stop time. One that has not started yet is a 409: a stop
        before the start is no window at all; delete it to cancel it, or put it with a new start.
        """
        found, now = await _find(store, experiment_id), datetime.now(UTC)
        if found.stop is not None and found.stop <= now:
            return found
        if found.start is not None and found.start >= now:
            raise ExperimentNotStarted(
                f"experiment {experiment_id!r} starts at {found.start.isoformat()}; "
                "DELETE it to cancel it, or PUT it with another start"
            )
        experiment = msgspec.structs.replace(found, stop=now)
        await store.put_experiment(experiment)
        await tracking.reload_experiments()
        return experiment

    @delete("/{experiment_id:str}", operation_id="deleteExperiment", responses=problems(400, 404))
    async def delete_one(
        self,
        experiment_id: PathId,
        store: NamedDependency[Store],
        tracking: NamedDependency[Tracking],
    ) -> None:
        """Remove an experiment's config (its counters expire on their own)."""
        if not await store.delete_experiment(experiment_id):
            raise UnknownExperiment(f"no experiment {experiment_id!r}")
        await tracking.reload_experiments()

    @get(
        "/{experiment_id:str}/results",
        operation_id="experimentResults",
        responses=problems(400, 404),
    )
    async def results(
        self, experiment_id: PathId, store: NamedDependency[Store], days: Days = 30
    ) -> ExperimentResult:
        """Per variant and channel: impressions, CTR, conversion rate, revenue per impression and
        average order value with 95% intervals, and each variant against the control."""
        experiment = await _find(store, experiment_id)
        today = datetime.now(UTC).date()
        daily = await store.daily(today, _days_since(experiment, today, days))
        return measures.experiment_result(experiment, measures.totals(daily))


async def _find(store: Store, experiment_id: str) -> Experiment:
    for experiment in await store.experiments():
        if experiment.experiment_id == experiment_id:
            return experiment
    raise UnknownExperiment(f"no experiment {experiment_id!r}")


def _days_since(experiment: Experiment, today: date, days: int) -> int:
    """At most ``days``, and no day before the experiment started."""
    if experiment.start is None:
        return days
    span = (today - experiment.start.astimezone(UTC).date()) + timedelta(days=1)
    return max(1, min(days, span.days))
