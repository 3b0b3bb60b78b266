"""Requests the server sends the client, waited for a limited time."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any, TypeVar

T = TypeVar("T")


async def answer_within(request: Awaitable[T], seconds: float) -> T:
    """The client's answer to `request`; TimeoutError after `seconds`, the request left open.

    Not cancelled on timeout: pygls would then meet a late answer with a cancelled request and
    report that to the user as a server error. A late answer is dropped quietly instead.
    (Not asyncio.wait_for: on Python 3.11 it can swallow a cancel that comes as the answer
    does, and the waiting task, cancelled at exit, would then wait for good.)
    """
    pending = asyncio.ensure_future(request)
    pending.add_done_callback(_drop_outcome)
    async with asyncio.timeout(seconds):
        return await asyncio.shield(pending)


def _drop_outcome(pending: asyncio.Future[Any]) -> None:
    # Retrieved, so that asyncio does not log an error nobody awaited.
    if not pending.cancelled():
        pending.exception()
