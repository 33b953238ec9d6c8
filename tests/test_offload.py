"""The event loop never scores a large catalogue: such rankings rerun in a worker thread."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from service import ann, artifact
from service.offload import guard, off_loop_if_heavy
from service.ranking import FactorModel
from service.settings import Settings
from tests.builders import clustered_artifact
from tests.conftest import ADMIN_KEY, client_for, replace

N_ITEMS = 4000


@pytest.fixture(scope="module")
def exact_model(tmp_path_factory: pytest.TempPathFactory) -> FactorModel:
    path = clustered_artifact(tmp_path_factory.mktemp("models"), N_ITEMS, with_index=False)
    return FactorModel(artifact.load(path), ann=ann.AnnConfig(mode="off"))


def test_guard_stops_a_ranking_above_the_limit_only_on_the_loops_pass() -> None:
    guard(10**9)  # no limit outside off_loop_if_heavy: batch jobs and threads score freely
    passes: list[int] = []

    def ranking(n_items: int) -> int:
        passes.append(threading.get_ident())
        guard(n_items)
        return n_items

    async def serve(n_items: int) -> int:
        return await off_loop_if_heavy(100, ranking, n_items)

    loop_thread = threading.get_ident()
    assert asyncio.run(serve(100)) == 100  # at the limit: once, on the loop
    assert passes == [loop_thread]
    assert asyncio.run(serve(101)) == 101  # above: stopped on the loop, rerun in a thread
    assert passes[1] == loop_thread
    assert passes[2] != loop_thread
    assert len(passes) == 3


def test_a_heavy_ranking_runs_in_a_thread_and_answers_the_same(exact_model: FactorModel) -> None:
    vector = exact_model.user_vector(3)
    expected = exact_model.recommend(vector, 10)
    threads: list[int] = []

    def ranking() -> tuple[np.ndarray, np.ndarray]:
        found = exact_model.recommend(vector, 10)
        threads.append(threading.get_ident())  # reached only by a pass that completed
        return found

    async def serve(limit: int) -> tuple[np.ndarray, np.ndarray]:
        return await off_loop_if_heavy(limit, ranking)

    loop_thread = threading.get_ident()
    light = asyncio.run(serve(N_ITEMS))  # the whole catalogue is within the limit
    heavy = asyncio.run(serve(N_ITEMS - 1))
    assert threads[0] == loop_thread
    assert threads[1] != loop_thread
    for rows, scores in (light, heavy):
        assert rows.tolist() == expected[0].tolist()
        np.testing.assert_allclose(scores, expected[1])


def test_the_loop_serves_other_requests_while_a_heavy_ranking_runs(
    exact_model: FactorModel,
) -> None:
    release = threading.Event()

    def slow_ranking() -> list[int]:
        exact_model.recommend(exact_model.user_vector(0), 10)  # trips the guard on the loop
        release.wait(5)  # stands for a long product that releases the GIL
        return [1]

    async def scenario() -> float:
        heavy = asyncio.create_task(off_loop_if_heavy(100, slow_ranking))
        started = time.perf_counter()
        await asyncio.sleep(0.01)  # the loop is free while the heavy ranking waits in its thread
        ticked = time.perf_counter() - started
        release.set()
        assert await heavy == [1]
        return ticked

    assert asyncio.run(scenario()) < 1.0


def test_the_api_answers_the_same_whatever_the_inline_limit(settings: Settings) -> None:
    answers = []
    with client_for(settings) as client:  # the profile needs a customer the service knows
        client.headers["Authorization"] = f"Bearer {ADMIN_KEY}"
        event = {"customer_id": "u0", "item_id": "i01", "event_type": "view", "channel": "web"}
        assert client.post("/v1/events", json=event).status_code == 202
    for limit in (1_000_000, 1):  # every ranking inline; every exact ranking in a thread
        changed = replace(settings, inline_scoring_max_items=limit, default_marketing=True)
        with client_for(changed) as client:
            client.headers["Authorization"] = f"Bearer {ADMIN_KEY}"
            answers.append(
                [
                    client.get("/v1/customers/u0/recommendations", params={"k": 3}).json()["items"],
                    client.get("/v1/customers/nobody/recommendations").json()["items"],
                    client.get("/v1/items/i03/similar", params={"k": 3}).json()["items"],
                    client.get("/v1/customers/u0/profile").json().get("recommendations"),
                    client.get(
                        "/v1/customers/u0/offers", params={"items": 3, "record": "false"}
                    ).json()["items"],
                ]
            )
    assert answers[0] == answers[1]
    assert all(answers[0])


def test_settings_read_the_inline_limit_from_the_environment(tmp_path: Path) -> None:
    env = {"RECO_INLINE_SCORING_MAX_ITEMS": "1234", "RECO_DATA_DIR": str(tmp_path)}
    assert Settings.from_env(env).inline_scoring_max_items == 1234
