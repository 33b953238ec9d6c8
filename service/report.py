"""``python -m service.report --out report.html``: the dashboard as one static HTML file.

For people who do not run the service: it reads the counters from Redis and the manifests from
the model folder, and inlines the data into the dashboard page (no network needed to view it).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

import msgspec
from redis.asyncio import Redis

from service import artifact, dashboard
from service.embedded_redis import EmbeddedRedis
from service.settings import Settings
from service.store import Store


async def write_report(settings: Settings, out: Path, days: int) -> dashboard.Dashboard:
    """Build the dashboard data from Redis and ``settings.model_dir`` and write ``out``."""
    embedded = None
    url = settings.redis_url
    if url is None:
        embedded = EmbeddedRedis(settings.data_dir)
        url = await asyncio.to_thread(embedded.start)
    store = Store(Redis.from_url(url), prefix=settings.key_prefix)
    try:
        version = artifact.latest_version(settings.model_dir)
        items = _catalogue_size(settings.model_dir, version)
        data = await dashboard.build(store, settings.model_dir, version, items, days=days)
    finally:
        await store.aclose()
        if embedded is not None:
            await asyncio.to_thread(embedded.stop)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(dashboard.page(data), encoding="utf-8")
    return data


def _catalogue_size(model_dir: str, version: str | None) -> int:
    if version is None:
        return 0
    manifest_file = artifact.resolve(model_dir, version) / artifact.MANIFEST
    manifest = msgspec.json.decode(manifest_file.read_bytes(), type=artifact.Manifest)
    return int(manifest.counts.get("items", 0))


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments, write the report, print where it is."""
    parser = argparse.ArgumentParser(prog="python -m service.report", description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("report.html"), help="HTML file to write")
    parser.add_argument("--days", type=int, default=14, help="days of history (default 14)")
    parser.add_argument("--model-dir", help="model folder (default: MODEL_DIR)")
    args = parser.parse_args(argv)
    settings = Settings.from_env()
    if args.model_dir:
        settings = msgspec.structs.replace(settings, model_dir=args.model_dir)
    data = asyncio.run(write_report(settings, args.out, args.days))
    print(f"wrote {args.out} ({len(data.channels)} channels, {len(data.experiments)} experiments)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
