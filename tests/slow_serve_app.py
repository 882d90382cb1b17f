"""``serve:app`` on an offline model that waits ``SLOW_MODEL_DELAY`` seconds before each streamed
event: a turn slow enough for a test to leave, rejoin, or kill its worker in the middle of it."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from typing import Any

from multisessions.offline_model import OfflineModel
from multisessions.web import OneLineStartupErrors
from serve import create_app


class SlowOfflineModel(OfflineModel):
    async def stream_response(self, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        async for event in super().stream_response(*args, **kwargs):
            await asyncio.sleep(float(os.environ.get("SLOW_MODEL_DELAY", "0.2")))
            yield event


app = OneLineStartupErrors(create_app(model=SlowOfflineModel()))
