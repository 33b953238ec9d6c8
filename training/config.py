"""The training configuration: model parameters, event and channel weights, decay, evaluation.

Written as TOML (``--config FILE``); unknown keys are errors, so a typo never passes silently.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec

from service import ann, customer_table, similar_table
from service.events import CHANNELS, DEFAULT_EVENT_WEIGHTS, EVENT_TYPES

NonNegative = Annotated[float, msgspec.Meta(ge=0)]
Fraction = Annotated[float, msgspec.Meta(ge=0, lt=1)]
Positive = Annotated[int, msgspec.Meta(ge=1)]

# The default relevance threshold, as a share of the rating scale: 3.5 of 5 stars keeps the 4s
# and 5s, as the published implicit-feedback protocols on MovieLens do ("ratings >= 4"), and
# works the same on a 10-point scale (7).
DEFAULT_RELEVANT_SHARE = 0.7
# The rating scale of data without positive ratings, when the config sets none.
DEFAULT_RATING_SCALE = 5.0


class Base(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Shared options: frozen, keyword-only, and unknown fields are errors (typos fail early)."""


class Weights(Base):
    """How events become the confidence values of the customer-item matrix.

    The weight of one event is ``event_types[type] * channels[channel] * decay(age)`` (times
    ``rating / rating_scale`` for ratings); a customer-item cell sums its events' weights and then
    ``transform`` is applied.

    A rating below ``min_relevant_rating`` (default ``DEFAULT_RELEVANT_SHARE`` of the scale: 3.5
    of 5) says the customer does not want the item: it weighs 0 (no positive evidence, in the
    matrix, popularity or adoption), is no evaluation target, but still marks the item as rated,
    so it is never recommended back to that customer.
    """

    event_types: dict[str, NonNegative] = msgspec.field(
        default_factory=lambda: dict(DEFAULT_EVENT_WEIGHTS)
    )
    channels: dict[str, NonNegative] = msgspec.field(
        default_factory=lambda: dict.fromkeys(CHANNELS, 1.0)
    )
    # Half-life of an event's weight, in days before the end of the data; 0 means no decay.
    half_life_days: NonNegative = 120.0
    # None: the data's highest rating (its 99.9th percentile, so a stray outlier cannot set it),
    # filled in by ``matrix.with_data_scale`` when training reads the events: 5 for 1-5 stars, 1
    # for likes (1) or thumbs (-1 / 1), 10 for a 10-point scale. A fixed 5 made every like a
    # "low rating" (1 < 3.5) and left such data nothing to learn from.
    rating_scale: Annotated[float, msgspec.Meta(gt=0)] | None = None
    # None: DEFAULT_RELEVANT_SHARE x rating_scale; 0: every rating of 0 or more is relevant.
    min_relevant_rating: NonNegative | None = None
    transform: Literal["log1p", "none"] = "log1p"

    @property
    def scale(self) -> float:
        """The rating scale: the configured one, the data's (``matrix.with_data_scale``), or
        ``DEFAULT_RATING_SCALE``."""
        return self.rating_scale or DEFAULT_RATING_SCALE

    @property
    def relevant_rating(self) -> float:
        """The lowest rating that is positive evidence and an evaluation target."""
        if self.min_relevant_rating is None:
            return DEFAULT_RELEVANT_SHARE * self.scale
        return self.min_relevant_rating

    def __post_init__(self) -> None:
        if self.rating_scale is not None and self.relevant_rating > self.rating_scale:
            raise ValueError(
                f"weights.min_relevant_rating: {self.relevant_rating:g} is above rating_scale "
                f"{self.rating_scale:g} (no full-marks rating would count)"
            )
        for name, known, kind in (
            ("event_types", EVENT_TYPES, "event type"),
            ("channels", CHANNELS, "channel"),
        ):
            if unknown := set(getattr(self, name)) - set(known):
                raise ValueError(f"weights.{name}: unknown {kind}(s) {sorted(unknown)}")


class AlsParams(Base):
    """implicit's AlternatingLeastSquares parameters."""

    factors: Positive = 64
    regularization: NonNegative = 0.05
    alpha: Annotated[float, msgspec.Meta(gt=0)] = 2.0
    iterations: Positive = 15
    # Explicit, so runs are reproducible whether or not the machine has CUDA.
    use_gpu: bool = False


class Evaluation(Base):
    """The time-based holdout: the last ``holdout_fraction`` of the data window is the test."""

    holdout_fraction: Fraction = 0.1
    k: Positive = 10
    # Test customers ranked per model (a seeded sample when there are more, overall and per
    # channel): every candidate scores each of them over the whole catalogue, so a large
    # retailer's fit would otherwise spend hours on its report.
    max_customers: Positive = 20_000


Algorithm = Literal[
    "auto",
    "blend",
    "als",
    "bpr",
    "itemknn",
    "ease",
    "lightfm",
    "popularity",
    "recent_popularity",
    "adoption",
]


# Blend parts whose weight may be negative: the all-time popularity prior. Subtracted beside
# recent popularity's positive weight it makes a trend (what is rising, not what sold most over
# the years): uci-online-retail's web shop rewarded it, completejourney and MovieLens did not
# (their validation keeps it at 0 or above).
SIGNED_PARTS = frozenset({"popularity"})


class Selection(Base):
    """Model selection: what competes on the validation period, the blend, and the ship guard.

    The validation period is the last ``validation_fraction`` of the training side of the split.
    ``blend_weights`` empty means: search them on validation (``blend_trials`` random draws, then
    rounds of coordinate refinement). Weights are 0 or more, but for ``SIGNED_PARTS``.
    """

    # At least one: selection picks the best of them.
    candidates: Annotated[list[str], msgspec.Meta(min_length=1)] = msgspec.field(
        default_factory=lambda: [
            "popularity",
            "recent_popularity",
            "adoption",
            "als",
            "itemknn",
            "ease",
            "blend",
        ]
    )
    blend_parts: list[str] = msgspec.field(
        default_factory=lambda: [
            "als",
            "itemknn",
            "ease",
            "popularity",
            "recent_popularity",
            "adoption",
            "attributes",
        ]
    )
    blend_weights: dict[str, float] = {}
    blend_trials: Positive = 60
    validation_fraction: Fraction = 0.1
    # Customers sampled for validation scoring (all of them when fewer).
    max_customers: Positive = 1500
    # Refuse to replace LATEST when the new model's test NDCG is below (1 - margin) x its NDCG.
    margin: Fraction = 0.05

    def __post_init__(self) -> None:
        for name, weight in self.blend_weights.items():
            if not math.isfinite(weight) or (weight < 0 and name not in SIGNED_PARTS):
                raise ValueError(
                    f"selection.blend_weights.{name}: {weight} (0 or more; only "
                    f"{', '.join(sorted(SIGNED_PARTS))} may be negative)"
                )


class TrainConfig(Base):
    """Everything ``python -m training fit`` can be told besides file paths.

    ``algorithm = "auto"`` selects the best candidate on the validation period; a model name
    trains that model. ``models.<name>`` holds each model's parameters (ALS's are ``als``).
    """

    algorithm: Algorithm = "auto"
    als: AlsParams = AlsParams()
    models: dict[str, dict[str, Any]] = {}
    weights: Weights = Weights()
    evaluation: Evaluation = Evaluation()
    selection: Selection = Selection()
    seed: int = 42
    # Catalogues of up to this many items ship each item's most similar items (training/similar.py);
    # larger catalogues' similar items come from the factors, through the index. 0: never.
    similar_table_max_items: Annotated[int, msgspec.Meta(ge=0)] = similar_table.DEFAULT_MAX_ITEMS
    # Customer bases of up to this many customers ship each one's best items, ranked at training
    # (service/customer_table.py): a customer with nothing new since is answered from them.
    # 0: never. 256 bytes and, measured here, 0.06-0.8 ms of training per customer (the most
    # for a blend with an item-item component): up to half an hour at the default cap.
    customer_table_max_customers: Annotated[int, msgspec.Meta(ge=0)] = (
        customer_table.DEFAULT_MAX_CUSTOMERS
    )
    # Catalogues of at least this many items ship an ANN index (service/ann.py), which the service
    # uses from the same size on by default (RECO_ANN_MIN_ITEMS).
    ann_min_items: Annotated[int, msgspec.Meta(ge=1)] = ann.AnnConfig().min_items
    # The recall@10 the shipped ANN index is calibrated to reach (service/ann.py, ``calibrate``):
    # higher probes more clusters per request.
    ann_recall_target: Annotated[float, msgspec.Meta(gt=0, le=1)] = ann.RECALL_TARGET

    def params(self, model: str) -> dict[str, Any]:
        """The parameters of ``model`` (ALS from ``als``, others from ``models``)."""
        if model == "als":
            p = msgspec.to_builtins(self.als)
            p.pop("use_gpu", None)
            return {**p, **self.models.get("als", {})}
        return dict(self.models.get(model, {}))


def load_config(path: str | Path | None) -> TrainConfig:
    """Read a TOML config file; None gives the defaults.

    Raises:
        ValueError: the file has an unknown key or a bad value (the message names it).
    """
    if path is None:
        return TrainConfig()
    try:
        return msgspec.toml.decode(Path(path).read_bytes(), type=TrainConfig)
    except msgspec.DecodeError as e:  # ValidationError too: not TOML, or a bad key or value
        raise ValueError(f"{path}: {e}") from e
