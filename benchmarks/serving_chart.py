"""Draw the serving benchmark's results as an SVG (no plotting library needed).

Run: ``python -m benchmarks.serving_chart [--results benchmarks/results/serving.json]
[--out docs/serving.svg]``. Two panels, one group of bars per catalogue size (1 worker): requests/s
of the bare route, its references and each endpoint, and their p99 latency.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from benchmarks.serving import REFERENCES, RESULTS

COLOURS = {
    "bare route": "#9e9e9e",
    REFERENCES["shaped"][1]: "#d0d0d0",
    REFERENCES["state_read"][1]: "#e8e8e8",
    "recommendations": "#1f77b4",
    "category": "#17becf",
    "session": "#8c564b",
    "similar": "#ff7f0e",
    "events": "#2ca02c",
    "offers": "#9467bd",
}
W, PANEL_H, TOP, LEFT = 820, 230, 40, 70


def series(report: dict[str, Any], workers: int) -> list[tuple[int, dict[str, dict[str, float]]]]:
    out = []
    for size in report["sizes"]:
        for run in size["runs"]:
            if run["workers"] != workers:
                continue
            bars = {"bare route": run["bare"]}
            for reference, (_, label) in REFERENCES.items():
                if reference in run:  # results from before a reference existed lack it
                    bars[label] = run[reference]
            for name, r in run["endpoints"].items():
                if "skipped" not in r:
                    bars[name] = r
            out.append((size["items"], bars))
    return out


def panel(
    data: list[tuple[int, dict[str, dict[str, float]]]], key: str, title: str, y0: int, unit: str
) -> list[str]:
    peak = max((b[key] for _, bars in data for b in bars.values()), default=1) or 1
    plot_w = W - LEFT - 20
    group_w = plot_w / max(len(data), 1)
    parts = [
        f'<text x="{LEFT}" y="{y0 - 12}" font-size="14" font-weight="bold">{title}</text>',
        f'<line x1="{LEFT}" y1="{y0 + PANEL_H}" x2="{W - 20}" y2="{y0 + PANEL_H}" stroke="#333"/>',
    ]
    for tick in range(5):
        value = peak * tick / 4
        y = y0 + PANEL_H - PANEL_H * tick / 4
        parts.append(
            f'<line x1="{LEFT}" y1="{y:.0f}" x2="{W - 20}" y2="{y:.0f}" stroke="#eee"/>'
            f'<text x="{LEFT - 6}" y="{y + 4:.0f}" font-size="10" text-anchor="end">'
            f"{value:,.0f}{unit}</text>"
        )
    for g, (items, bars) in enumerate(data):
        bar_w = (group_w - 30) / max(len(bars), 1)
        for b, (name, r) in enumerate(bars.items()):
            h = PANEL_H * r[key] / peak
            x = LEFT + g * group_w + 15 + b * bar_w
            y = y0 + PANEL_H - h
            parts.append(
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar_w - 4:.1f}" height="{h:.1f}" '
                f'fill="{COLOURS.get(name, "#555")}"><title>{name}: {r[key]:,}</title></rect>'
                f'<text x="{x + (bar_w - 4) / 2:.1f}" y="{y - 3:.1f}" font-size="9" '
                f'text-anchor="middle">{r[key]:,.0f}</text>'
            )
        parts.append(
            f'<text x="{LEFT + g * group_w + group_w / 2:.0f}" y="{y0 + PANEL_H + 16}" '
            f'font-size="12" text-anchor="middle">{items:,} items</text>'
        )
    return parts


def draw(report: dict[str, Any], workers: int = 1) -> str:
    data = series(report, workers)
    names = list(dict.fromkeys(n for _, bars in data for n in bars))
    # The legend, wrapped into rows that fit the width.
    legend, x, row = [], LEFT, 0
    for name in names:
        width = 30 + int(6.2 * len(name))
        if x + width > W and x > LEFT:
            x, row = LEFT, row + 1
        legend.append((name, x, row))
        x += width
    height = TOP + 2 * (PANEL_H + 70) + 20 + 16 * row
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{height}" '
        'font-family="sans-serif">',
        f'<rect width="{W}" height="{height}" fill="white"/>',
        *panel(data, "rps", f"requests/s ({workers} worker, wrk, same run)", TOP, ""),
        *panel(data, "p99_ms", "p99 latency (ms)", TOP + PANEL_H + 70, ""),
    ]
    for name, x, r in legend:
        y = height - 18 - 16 * (row - r)
        parts.append(
            f'<rect x="{x}" y="{y}" width="10" height="10" fill="{COLOURS[name]}"/>'
            f'<text x="{x + 14}" y="{y + 9}" font-size="11">{name}</text>'
        )
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", type=Path, default=RESULTS / "serving.json")
    parser.add_argument("--out", type=Path, default=Path("docs/serving.svg"))
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    report = json.loads(args.results.read_text())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(draw(report, args.workers))
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
