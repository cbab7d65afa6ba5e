"""The asynchronous client, and 429s against a server whose quota is three
requests a two-second window: waiting ``Retry-After`` and retrying (bounded),
or, switched off, raising with the rate-limit state; POSTs are retried only
under an Idempotency-Key."""

from __future__ import annotations

import asyncio
import time
from typing import Any, List

import httpx
import pytest

from advps import AdvpsError, AsyncClient, Client, OperationFailedError


async def test_the_async_client_runs_operations_and_waits(server: Any) -> None:
    async with AsyncClient(server.api_key, server.base_url) as client:
        me, stock = await asyncio.gather(client.me(), client.products.stock(limit=100))
        assert me["account"] == "demo"
        walked = [r["id"] async for r in client.products.stock_all(limit=4)]
        assert walked == [r["id"] for r in stock["stock"]]
        r0 = (await client.me())["rateLimit"]["remaining"]
        await client.services.status("lxc_service_1")
        await client.services.status("lxc_service_1")
        assert r0 - (await client.me())["rateLimit"]["remaining"] == 1, "the second read was a free 304"
        rebuild = await client.services.rebuild("lxc_service_1", os="debian-12")
        assert (await client.wait_for_task(rebuild["taskId"], timeout=60))["status"] == "COMPLETED"
        failing = await client.services.rebuild("lxc_service_1", os="sandbox-fail")
        with pytest.raises(OperationFailedError):
            await client.wait_for_task(failing["taskId"], timeout=60)
        placed = await client.purchase.linux(product_id="prod_jkl012", ram="8 GB")
        done = await client.wait_for_order(placed["order"]["orderId"], timeout=60)
        assert done["services"][0]["password"]
        with pytest.raises(AdvpsError) as info:
            await client.orders.get("no-such-order")
        assert info.value.status == 404
        # Cancelling the awaiting task aborts a wait.
        slow = await client.services.rebuild("lxc_service_1", os="ubuntu-24.04")
        waiting = asyncio.ensure_future(client.wait_for_task(slow["taskId"]))
        await asyncio.sleep(0.2)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        await client.wait_for_task(slow["taskId"], timeout=60)


class Seen(httpx.BaseTransport):
    def __init__(self) -> None:
        self.inner = httpx.HTTPTransport()
        self.log: List[Any] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        response.read()
        self.log.append((request, response, time.monotonic()))
        return response


def exhaust(client: Client) -> None:
    time.sleep(2.1)  # a fresh window, then its three requests
    for _ in range(3):
        client.os.list()


def test_429_switched_off_raises_with_retry_after(limited_server: Any) -> None:
    with Client(limited_server.api_key, limited_server.base_url, retry_on_rate_limit=False) as client:
        exhaust(client)
        with pytest.raises(AdvpsError) as info:
            client.os.list()
    err = info.value
    assert err.status == 429
    assert err.message == "Too many requests: rate limit exceeded"
    assert err.retry_after is not None and 1 <= err.retry_after <= 2
    assert err.rate_limit is not None and err.rate_limit.remaining == 0 and err.rate_limit.limit == 3


def test_429_waits_retry_after_and_retries(limited_server: Any) -> None:
    seen = Seen()
    with Client(limited_server.api_key, limited_server.base_url, transport=seen) as client:
        exhaust(client)
        del seen.log[:]
        assert client.os.list()["os"]
    limited = [e for e in seen.log if e[1].status_code == 429]
    assert limited, "a 429 came first"
    retry_after = int(limited[0][1].headers["retry-after"])
    assert seen.log[-1][1].status_code == 200
    assert seen.log[-1][2] - limited[0][2] >= retry_after - 0.05


def test_429_retries_are_bounded(limited_server: Any) -> None:
    with Client(limited_server.api_key, limited_server.base_url, max_retries=0) as client:
        exhaust(client)
        with pytest.raises(AdvpsError) as info:
            client.os.list()
        assert info.value.status == 429


def test_a_post_is_retried_under_its_key_and_not_without(limited_server: Any) -> None:
    seen = Seen()
    with Client(limited_server.api_key, limited_server.base_url, transport=seen) as client:
        exhaust(client)
        assert client.services.reboot("vps_service_1", mode="force")["serviceId"] == "vps_service_1"
    keys = [q.headers.get("idempotency-key") for q, _, _ in seen.log if q.method == "POST"]
    assert len(keys) >= 2 and len(set(keys)) == 1 and keys[0]
    with Client(limited_server.api_key, limited_server.base_url, idempotency=False) as plain:
        exhaust(plain)
        with pytest.raises(AdvpsError) as info:
            plain.services.reboot("vps_service_1", mode="force")
        assert info.value.status == 429
