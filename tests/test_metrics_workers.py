"""/metrics over several workers: with PROMETHEUS_MULTIPROC_DIR, any worker answers for all."""

from __future__ import annotations

import asyncio
import re

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tools.loadtest import free_port, start_server, stop_server, wait_until_ready

pytestmark = pytest.mark.slow  # starts uvicorn with two workers

METRICS_TOKEN = "metrics-token-0123456789abcdef"
TOKEN = "carol-token-0123456789abcdef"


def answered(text: str) -> float:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "multisessions_turns_total" and sample.labels == {"outcome": "ok"}:
                return sample.value
    raise AssertionError("no multisessions_turns_total{outcome='ok'}")


async def test_every_worker_answers_for_all_workers_turns(tmp_path, monkeypatch):
    folder = tmp_path / "metrics"
    folder.mkdir()
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(folder))
    monkeypatch.setenv("SERVE_METRICS_TOKEN", METRICS_TOKEN)
    port = free_port()
    server = start_server(tmp_path, port, 2, None, {"carol": TOKEN})
    try:
        await wait_until_ready(server, tmp_path, 2)
        url = f"http://127.0.0.1:{port}"

        async def turn(i: int) -> int:
            async with httpx.AsyncClient(base_url=url, timeout=30) as client:  # a connection each
                answer = await client.post(
                    f"/api/conversations/c{i}/messages",
                    json={"message": f"hello {i}"},
                    headers={"Authorization": f"Bearer {TOKEN}"},
                )
                return answer.status_code

        assert await asyncio.gather(*(turn(i) for i in range(20))) == [200] * 20

        async def scrape() -> float:
            async with httpx.AsyncClient(base_url=url, timeout=30) as client:
                answer = await client.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
                assert answer.status_code == 200, answer.text
                return answered(answer.text)

        # Each scrape on a connection of its own, so on either worker: all 20, every time.
        assert await asyncio.gather(*(scrape() for _ in range(8))) == [20.0] * 8
        writers = {re.sub(r"\D", "", path.stem) for path in folder.glob("counter_*.db")}
        assert len(writers) == 2, writers  # both workers keep their numbers in the folder
    finally:
        stop_server(server)
