"""``python -m service.offers_cli``: import offers from a file, export an offer audience in batch.

Reads the service's settings from the environment (``REDIS_URL``, ``MODEL_DIR``,
``RECO_KEY_PREFIX``...), so a batch run sees the same catalogue, state and contact history as
the running service, and records what it exports in the same contact history.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

import msgspec
from redis.asyncio import Redis

from service import identity, offer_service
from service.availability import Availability
from service.identity import InvalidIdentifier
from service.live_model import LiveModel
from service.offers import InvalidOffer, Offer, decode_offer, decode_rules
from service.settings import Settings
from service.store import Store

_json = msgspec.json.Encoder()


def parse_offers(raw: bytes) -> tuple[list[Offer], list[str]]:
    """Offers in a JSON list or NDJSON file; and one message per invalid offer (with its field)."""
    stripped = raw.strip()
    if stripped.startswith(b"["):
        try:
            bodies = [_json.encode(b) for b in msgspec.json.decode(stripped)]
        except msgspec.DecodeError as e:
            return [], [f"the file is not a valid JSON list: {e}"]
    else:
        bodies = [line for line in stripped.splitlines() if line.strip()]
    offers, problems = [], []
    for n, body in enumerate(bodies):
        try:
            head = msgspec.json.decode(body)
        except msgspec.DecodeError as e:
            problems.append(f"offer {n}: $: not valid JSON: {e}")
            continue
        offer_id = head.get("offer_id") if isinstance(head, dict) else None
        if not isinstance(offer_id, str):
            problems.append(f"offer {n}: $.offer_id: required")
            continue
        try:
            offers.append(decode_offer(body, offer_id))
        except InvalidOffer as e:
            problems.extend(f"offer {n} ({offer_id}): {f}: {m}" for f, m in e.errors)
    return offers, problems


async def import_offers(store: Store, path: Path, rules: Path | None, partial: bool) -> int:
    """Validate every offer in ``path`` and store them (all, or with ``partial`` the valid ones)."""
    offers, problems = parse_offers(path.read_bytes())
    for p in problems:
        print(p, file=sys.stderr)
    if problems and not partial:
        print(f"nothing imported: {len(problems)} problem(s)", file=sys.stderr)
        return 1
    if rules is not None:
        await store.set_offer_rules(decode_rules(rules.read_bytes()))
    for offer in offers:
        await store.put_offer(offer)
    print(f"imported {len(offers)} offer(s)")
    return 0


async def export_audience(
    store: Store, settings: Settings, args: argparse.Namespace, out: IO[bytes]
) -> int:
    """Write the audience's NDJSON to ``out``, exactly as ``POST /v1/exports/offers`` streams it."""
    live = LiveModel(settings.model_dir, verify_checksums=settings.verify_checksums)
    await live.refresh()
    model = live.get()
    ids = None
    if args.customers is not None:
        ids = [line.strip() for line in Path(args.customers).read_text().splitlines()]
        ids = [i for i in ids if i]
        # Before the first line, as the endpoint: a run cut off at a bad identifier would have
        # recorded the contacts of the lines written, counted twice by the next run.
        try:
            identity.check_all(ids, settings.identifier_kinds_set)
        except InvalidIdentifier as e:
            print(f"{args.customers}: {e}; nothing exported", file=sys.stderr)
            return 2
    chooser = offer_service.Chooser(
        model=model,
        store=store,
        settings=settings,
        catalogue=await offer_service.load_catalogue(store, model),
        channel=args.channel,
        k_offers=args.offers,
        k_items=args.items,
        available=await Availability(store).mask(model, args.channel, None),
        record=not args.no_record,
        segment=args.segment,
    )
    count = 0
    async for choice in offer_service.export(chooser, datetime.now(UTC), customer_ids=ids):
        out.write(_json.encode(choice) + b"\n")
        count += 1
    print(f"exported {count} customer(s) on {args.channel}", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The command line."""
    parser = argparse.ArgumentParser(prog="python -m service.offers_cli", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    imp = sub.add_parser("import", help="validate and store offers from a JSON list or NDJSON")
    imp.add_argument("file", type=Path)
    imp.add_argument("--rules", type=Path, help="also replace the offer rules (JSON)")
    imp.add_argument("--partial", action="store_true", help="import the valid offers anyway")
    exp = sub.add_parser("export", help="NDJSON offers and items for an audience")
    exp.add_argument("--channel", default="email")
    who = exp.add_mutually_exclusive_group()
    who.add_argument("--segment", help="a segment of the offer rules (default: every customer)")
    who.add_argument("--customers", help="a file of customer ids or identifiers, one a line")
    exp.add_argument("--offers", type=int, default=1, help="offers per customer")
    exp.add_argument("--items", type=int, default=5, help="recommended items per customer")
    exp.add_argument("--out", type=Path, help="output file (default: stdout)")
    exp.add_argument("--no-record", action="store_true", help="do not record the contacts")
    for p in (imp, exp):
        p.add_argument("--redis-url", help="default: REDIS_URL")
        p.add_argument("--key-prefix", help="default: RECO_KEY_PREFIX")
    return parser


async def run(args: argparse.Namespace, settings: Settings) -> int:
    """Run one command against the configured Redis."""
    url = args.redis_url or settings.redis_url
    if url is None:
        print("set REDIS_URL or --redis-url (python -m service prints its URL)", file=sys.stderr)
        return 2
    client = Redis.from_url(url, socket_timeout=30)
    store = Store(
        client,
        prefix=args.key_prefix or settings.key_prefix,
        recent_max=settings.recent_events_max,
        recent_ttl_days=settings.recent_events_ttl_days,
    )
    try:
        if args.command == "import":
            return await import_offers(store, args.file, args.rules, args.partial)
        if args.out is None:
            return await export_audience(store, settings, args, sys.stdout.buffer)
        with args.out.open("wb") as out:
            return await export_audience(store, settings, args, out)
    finally:
        await store.aclose()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point."""
    args = build_parser().parse_args(argv)
    return asyncio.run(run(args, Settings.from_env()))


if __name__ == "__main__":
    sys.exit(main())
