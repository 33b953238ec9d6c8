"""A/B tests: their configuration and the deterministic assignment of customers to variants.

Pure: no Redis, no HTTP. A customer's variant depends only on the experiment id and the customer
id (a blake2b hash, never Python's salted ``hash()``), so every replica and every channel puts the
same customer in the same variant without storing anything.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from datetime import datetime
from typing import Annotated, Literal

import msgspec

from service.events import Channel, Id, Placement

Ranking = Literal["model", "popular"]
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")]
# Weights are relative shares; bounded so that their sum stays finite (an infinite sum sent every
# customer to the last variant) while any split a test needs stays expressible.
MAX_WEIGHT = 1e6


class Variant(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One arm: which model version serves it and how it ranks, and its share of the traffic.

    ``model_version`` None means the live model; ``ranking`` ``popular`` serves the channel's
    popular items (a baseline arm).
    """

    name: Name
    weight: Annotated[float, msgspec.Meta(gt=0, le=MAX_WEIGHT)] = 1.0
    model_version: Id | None = None
    ranking: Ranking = "model"


class ExperimentConfig(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """What the admin API accepts; the first variant is the control the others are compared to.

    ``channels`` empty means every channel; ``placements`` empty means every request, with a
    placement or without, else only requests naming one of them (the others get the next
    experiment, or none); ``start``/``stop`` unset mean "now" and "until stopped".
    """

    variants: Annotated[list[Variant], msgspec.Meta(min_length=2, max_length=10)]
    channels: list[Channel] = []
    placements: Annotated[list[Placement], msgspec.Meta(max_length=32)] = []
    start: Annotated[datetime, msgspec.Meta(tz=True)] | None = None
    stop: Annotated[datetime, msgspec.Meta(tz=True)] | None = None
    description: str = ""

    def __post_init__(self) -> None:
        names = [v.name for v in self.variants]
        if len(set(names)) != len(names):
            raise ValueError("variant names must be unique")
        if self.start and self.stop and self.stop <= self.start:
            raise ValueError("`stop` must be after `start`")


class Experiment(ExperimentConfig, frozen=True, kw_only=True):
    """A stored experiment: its config and its id."""

    experiment_id: Name


class Assignment(msgspec.Struct, frozen=True, kw_only=True):
    """The experiment and variant one customer gets on one channel."""

    experiment_id: str
    variant: Variant

    @property
    def arm(self) -> str:
        """The statistics dimension of this variant: ``exp:<experiment>:<variant>``."""
        return arm(self.experiment_id, self.variant.name)


def arm(experiment_id: str, variant: str) -> str:
    """The statistics dimension of one variant of one experiment."""
    return f"exp:{experiment_id}:{variant}"


def bucket(experiment_id: str, customer_id: str) -> float:
    """A number in [0, 1) fixed by the experiment and customer ids alone."""
    digest = hashlib.blake2b(
        f"{experiment_id}\x00{customer_id}".encode(), digest_size=8, person=b"omnireco-ab"
    ).digest()
    return int.from_bytes(digest, "big") / 2.0**64


def assign(experiment: Experiment, customer_id: str) -> Variant:
    """The variant of ``customer_id``: the traffic split over the variants' weights."""
    point = bucket(experiment.experiment_id, customer_id) * sum(
        v.weight for v in experiment.variants
    )
    for variant in experiment.variants:
        point -= variant.weight
        if point < 0:
            return variant
    return experiment.variants[-1]  # float rounding at the very top of the range


def is_running(
    experiment: Experiment, channel: str, now: datetime, placement: str | None = None
) -> bool:
    """True when ``experiment`` covers ``channel`` and ``placement`` and ``now`` lies in its
    start/stop."""
    if experiment.channels and channel not in experiment.channels:
        return False
    if experiment.placements and placement not in experiment.placements:
        return False
    if experiment.start and now < experiment.start:
        return False
    return not (experiment.stop and now >= experiment.stop)


def choose(
    experiments: Iterable[Experiment],
    channel: str,
    customer_id: str,
    now: datetime,
    placement: str | None = None,
) -> Assignment | None:
    """The assignment for one request: the first running experiment by id covering the channel
    and the placement.

    One experiment per request keeps variants' traffic independent; overlapping experiments on a
    channel run one after another in id order.
    """
    for experiment in sorted(experiments, key=lambda e: e.experiment_id):
        if is_running(experiment, channel, now, placement):
            return Assignment(
                experiment_id=experiment.experiment_id,
                variant=assign(experiment, customer_id),
            )
    return None
