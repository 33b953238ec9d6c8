"""The offers CLI: file import with validation, and the batch export against a real Redis."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
import redis
from litestar.testing import TestClient

from service import offers_cli
from service.settings import Settings
from tests.test_offers import consent, offer, offers


def run(settings: Settings, *argv: str) -> int:
    args = offers_cli.build_parser().parse_args(list(argv))
    return asyncio.run(offers_cli.run(args, settings))


def write_offers(tmp_path: Path, *bodies: dict[str, object]) -> Path:
    path = tmp_path / "offers.ndjson"
    path.write_text("\n".join(json.dumps(b) for b in bodies) + "\n")
    return path


def test_an_invalid_offer_stops_the_import_unless_partial(
    client: TestClient, settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_offers(
        tmp_path,
        {"offer_id": "a", **offer()},
        {"offer_id": "b", **offer(channels=["fax"])},
        {"offer_id": "c", **offer(kind="free_delivery", amount=None, target={})},
    )
    assert run(settings, "import", str(path)) == 1
    assert "offer 1 (b): $.channels[0]" in capsys.readouterr().err
    assert client.get("/v1/offers").json() == []
    assert run(settings, "import", str(path), "--partial") == 0
    assert [o["offer_id"] for o in client.get("/v1/offers").json()] == ["a", "c"]


def test_a_json_list_imports_with_rules(
    client: TestClient, settings: Settings, tmp_path: Path
) -> None:
    path = tmp_path / "offers.json"
    path.write_text(json.dumps([{"offer_id": "a", **offer()}]))
    rules = tmp_path / "rules.json"
    rules.write_text(json.dumps({"suppress_elsewhere_hours": 2}))
    assert run(settings, "import", str(path), "--rules", str(rules)) == 0
    assert client.get("/v1/offer-rules").json()["suppress_elsewhere_hours"] == 2


def test_the_batch_export_writes_what_the_endpoint_answers(
    client: TestClient, settings: Settings, tmp_path: Path
) -> None:
    for c in ("u0", "u1"):
        consent(client, c, email=True)
    client.put("/v1/offers/even", json=offer())
    expected = {c: offers(client, c, "email", k=1, items=2, record="false") for c in ("u0", "u1")}
    ids = tmp_path / "ids.txt"
    ids.write_text("u0\nu1\nu2\n")
    out = tmp_path / "out.ndjson"
    argv = ["export", "--customers", str(ids), "--items", "2", "--out", str(out), "--no-record"]
    assert run(settings, *argv) == 0
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [line["customer_id"] for line in lines] == ["u0", "u1"]  # u2: no consent
    for line in lines:
        assert line["offers"] == expected[line["customer_id"]]["offers"]
        assert line["items"] == expected[line["customer_id"]]["items"]


def test_an_invalid_identifier_stops_the_export_before_any_line_or_contact(
    client: TestClient, settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    consent(client, "u0", email=True)
    client.put("/v1/offers/even", json=offer())
    ids = tmp_path / "ids.txt"
    ids.write_text("u0\n" + "".join(f"x{n}\n" for n in range(300)) + "email:\n")
    out = tmp_path / "out.ndjson"
    assert run(settings, "export", "--customers", str(ids), "--out", str(out)) == 2
    assert "'email:'" in capsys.readouterr().err
    assert out.read_text() == ""
    raw = redis.Redis.from_url(settings.redis_url)  # type: ignore[arg-type]
    assert raw.zcard(f"{settings.key_prefix}:{{c:u0}}:offers:contacts") == 0
    raw.close()
    # Without the bad line the same run records u0's contact: the key above is the right one.
    ids.write_text("u0\n")
    assert run(settings, "export", "--customers", str(ids), "--out", str(out)) == 0
    raw = redis.Redis.from_url(settings.redis_url)  # type: ignore[arg-type]
    assert raw.zcard(f"{settings.key_prefix}:{{c:u0}}:offers:contacts") == 1
    raw.close()


def test_a_line_that_is_not_json_is_reported(
    client: TestClient, settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "offers.ndjson"
    path.write_text(json.dumps({"offer_id": "a", **offer()}) + "\n{not json\n")
    assert run(settings, "import", str(path)) == 1
    assert "offer 1: $: not valid JSON" in capsys.readouterr().err
