"""The ADVPS clients, synchronous and asynchronous, on httpx.

Each call's envelope is unwrapped to its ``data``; every failure raises
``AdvpsError``. Built in, each switchable: waiting out 429s (and 503s) by
``Retry-After``, retrying POSTs under one ``Idempotency-Key`` generated per
logical call, ``If-None-Match`` on the resources that send an ``ETag`` (an
unchanged answer is a free 304), polling helpers that follow the server's
``Retry-After`` hints, and page iterators. The operations themselves are
generated into ``_operations.py`` from the OpenAPI document.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Dict, Mapping, Optional, Tuple, Union

import httpx

from . import _models as m
from ._operations import AsyncOperations, SyncOperations

__all__ = [
    "AdvpsError",
    "AsyncClient",
    "Client",
    "OperationFailedError",
    "RateLimit",
    "WaitTimeoutError",
]

VERSION = "0.1.0"
DEFAULT_BASE_URL = "http://127.0.0.1:8080"
_TASK_DONE = {"COMPLETED", "FAILED"}
_ORDER_OK = {"COMPLETED", "ASSIGNED"}
_ORDER_FAILED = {"FAILED", "CANCELLED", "REJECTED"}
_ETAG_CACHE_SIZE = 256


@dataclass(frozen=True)
class RateLimit:
    """The ``RateLimit-*`` headers of the last answer."""

    limit: Optional[int]
    remaining: Optional[int]
    reset: Optional[int]
    policy: Optional[str]
    at: float


class AdvpsError(Exception):
    """The one error every failed call raises.

    ``status`` is the HTTP status (0 when no answer came: network error,
    timeout), ``message`` and ``errors`` come from the error envelope.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int = 0,
        errors: Optional[Dict[str, Any]] = None,
        request_id: Optional[str] = None,
        rate_limit: Optional[RateLimit] = None,
        retry_after: Optional[int] = None,
        body: Any = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.errors = errors
        self.request_id = request_id
        self.rate_limit = rate_limit
        self.retry_after = retry_after
        self.body = body

    def __repr__(self) -> str:
        return f"AdvpsError(status={self.status}, message={self.message!r}, request_id={self.request_id!r})"


class OperationFailedError(AdvpsError):
    """``wait_for_task`` / ``wait_for_order`` saw the work end without success."""

    def __init__(self, message: str, result: Any) -> None:
        super().__init__(message, status=200)
        self.result = result


class WaitTimeoutError(AdvpsError, TimeoutError):
    """``wait_for_task`` / ``wait_for_order`` ran out of time."""

    def __init__(self, message: str, result: Any) -> None:
        super().__init__(message)
        self.result = result


def _header_int(headers: httpx.Headers, name: str) -> Optional[int]:
    raw = headers.get(name)
    if raw is None:
        return None
    try:
        return int(raw.strip())
    except ValueError:
        return None


def parse_rate_limit(headers: httpx.Headers) -> Optional[RateLimit]:
    limit = _header_int(headers, "ratelimit-limit")
    remaining = _header_int(headers, "ratelimit-remaining")
    reset = _header_int(headers, "ratelimit-reset")
    if limit is None and remaining is None and reset is None:
        return None
    return RateLimit(limit, remaining, reset, headers.get("ratelimit-policy"), time.time())


@dataclass
class _Prepared:
    method: str
    url: str
    params: Dict[str, str]
    headers: Dict[str, str]
    content: Optional[bytes]
    cache_key: str
    cached: Optional[Tuple[str, Any]]
    conditional: bool
    retryable: bool


class _Base:
    def __init__(
        self,
        api_key: Optional[str] = None,
        base_url: Optional[str] = None,
        *,
        timeout: float = 30.0,
        max_retries: int = 3,
        retry_on_rate_limit: bool = True,
        max_retry_wait: float = 60.0,
        idempotency: bool = True,
        conditional_requests: bool = True,
        headers: Optional[Mapping[str, str]] = None,
    ) -> None:
        key = api_key or os.environ.get("ADVPS_API_KEY")
        if not key:
            raise AdvpsError("An API key is needed: pass api_key or set ADVPS_API_KEY")
        self.api_key = key
        self.base_url = (base_url or os.environ.get("ADVPS_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")
        self.timeout = timeout
        self.max_retries = max_retries
        self.retry_on_rate_limit = retry_on_rate_limit
        self.max_retry_wait = max_retry_wait
        self.idempotency = idempotency
        self.conditional_requests = conditional_requests
        self.extra_headers = dict(headers or {})
        #: The last ``RateLimit-*`` state the server reported, or None.
        self.rate_limit: Optional[RateLimit] = None
        #: The last answer's ``X-Request-Id``.
        self.last_request_id: Optional[str] = None
        self._etags: "OrderedDict[str, Tuple[str, Any]]" = OrderedDict()
        # The namespaces (services, tasks, ...) of the generated mixin.
        self._bind_operations()  # type: ignore[attr-defined]

    def _prepare(
        self,
        method: str,
        path: str,
        query: Optional[Dict[str, Any]],
        body: Optional[Dict[str, Any]],
        conditional: bool,
        idempotency_key: Optional[str],
    ) -> _Prepared:
        params = {k: _query_value(v) for k, v in (query or {}).items() if v is not None}
        headers = {
            "accept": "application/json",
            "x-api-key": self.api_key,
            "user-agent": f"advps-python/{VERSION}",
            **self.extra_headers,
        }
        content = None
        if body is not None:
            present = {k: v for k, v in body.items() if v is not None}
            if present or method != "POST":
                headers["content-type"] = "application/json"
                content = json.dumps(present).encode()
        # One key per logical call, the same on each of its retries, so the
        # server runs the call once however often it is sent.
        if method == "POST" and idempotency_key is None and self.idempotency:
            idempotency_key = str(uuid.uuid4())
        if idempotency_key:
            headers["idempotency-key"] = idempotency_key
        url = self.base_url + path
        cache_key = str(httpx.URL(url, params=params))
        conditional = conditional and self.conditional_requests
        cached = self._etags.get(cache_key) if conditional else None
        if cached:
            headers["if-none-match"] = cached[0]
        retryable = method != "POST" or bool(idempotency_key)
        return _Prepared(method, url, params, headers, content, cache_key, cached, conditional, retryable)

    def _outcome(self, prep: _Prepared, response: httpx.Response, attempt: int) -> Tuple[str, Any]:
        """("done", (data, headers)) or ("wait", seconds); raises AdvpsError."""
        rate_limit = parse_rate_limit(response.headers)
        if rate_limit:
            self.rate_limit = rate_limit
        request_id = response.headers.get("x-request-id")
        if request_id:
            self.last_request_id = request_id
        if response.status_code == 304 and prep.cached is not None:
            return "done", (prep.cached[1], response.headers)
        try:
            body = response.json() if response.content else None
        except ValueError:
            body = None
        if response.is_success:
            data = body.get("data") if isinstance(body, dict) and "data" in body else body
            etag = response.headers.get("etag")
            if prep.conditional and etag:
                self._etags[prep.cache_key] = (etag, data)
                self._etags.move_to_end(prep.cache_key)
                while len(self._etags) > _ETAG_CACHE_SIZE:
                    self._etags.popitem(last=False)
            return "done", (data, response.headers)
        retry_after = _header_int(response.headers, "retry-after")
        waitable = self.retry_on_rate_limit if response.status_code == 429 else response.status_code == 503
        if (
            waitable
            and prep.retryable
            and attempt < self.max_retries
            and retry_after is not None
            and retry_after <= self.max_retry_wait
        ):
            return "wait", float(retry_after)
        message = body.get("message") if isinstance(body, dict) else None
        raise AdvpsError(
            message if isinstance(message, str) and message else f"HTTP {response.status_code}",
            status=response.status_code,
            errors=body.get("errors") if isinstance(body, dict) else None,
            request_id=request_id,
            rate_limit=rate_limit,
            retry_after=retry_after,
            body=body,
        )

    def _can_retry_transport(self, prep: _Prepared, attempt: int) -> bool:
        return prep.retryable and attempt < self.max_retries

    @staticmethod
    def _task_done(task_id: str) -> Callable[[Any], bool]:
        def done(data: Any) -> bool:
            if data["status"] not in _TASK_DONE:
                return False
            if data["status"] == "FAILED":
                raise OperationFailedError(f"Task {task_id} failed: {data.get('error') or 'no reason given'}", data)
            return True

        return done

    @staticmethod
    def _order_done(order_id: str) -> Callable[[Any], bool]:
        def done(data: Any) -> bool:
            status = data["order"]["status"]
            if status in _ORDER_FAILED:
                raise OperationFailedError(
                    f"Order {order_id} is {status}: {data['order'].get('error') or 'no reason given'}", data
                )
            return status in _ORDER_OK

        return done


def _query_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def _transport_error(err: Exception) -> AdvpsError:
    return AdvpsError(f"Request failed: {err}")


class Client(_Base, SyncOperations):
    """The synchronous client. Use it as a context manager, or call ``close()``."""

    def __init__(
        self,
        api_key: Optional[str] = None,
        base_url: Optional[str] = None,
        *,
        transport: Optional[httpx.BaseTransport] = None,
        **options: Any,
    ) -> None:
        super().__init__(api_key, base_url, **options)
        self._http = httpx.Client(transport=transport, timeout=self.timeout)

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def send(
        self,
        method: str,
        path: str,
        *,
        query: Optional[Dict[str, Any]] = None,
        body: Optional[Dict[str, Any]] = None,
        conditional: bool = False,
        timeout: Optional[float] = None,
        idempotency_key: Optional[str] = None,
    ) -> Tuple[Any, httpx.Headers]:
        """One operation: its ``data`` and the answer's headers."""
        prep = self._prepare(method, path, query, body, conditional, idempotency_key)
        attempt = 0
        while True:
            try:
                response = self._http.request(
                    prep.method,
                    prep.url,
                    params=prep.params,
                    headers=prep.headers,
                    content=prep.content,
                    timeout=timeout if timeout is not None else self.timeout,
                )
            except httpx.TransportError as err:
                if self._can_retry_transport(prep, attempt):
                    time.sleep(min(0.25 * 2**attempt, 5.0))
                    attempt += 1
                    continue
                raise _transport_error(err) from err
            kind, value = self._outcome(prep, response, attempt)
            if kind == "done":
                return value  # type: ignore[no-any-return]
            time.sleep(value)
            attempt += 1

    def _request(self, method: str, path: str, *, operation_id: str, **kw: Any) -> Any:
        return self.send(method, path, **kw)[0]

    def _poll(self, fetch: Callable[[], Tuple[Any, httpx.Headers]], done: Callable[[Any], bool], what: str, timeout: float, interval: float) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            data, headers = fetch()
            if done(data):
                return data
            hint = _header_int(headers, "retry-after")
            left = deadline - time.monotonic()
            if left <= 0:
                raise WaitTimeoutError(f"Gave up waiting for {what} after {timeout} s", data)
            time.sleep(min(float(hint) if hint is not None else interval, left))

    def wait_for_task(self, task_id: str, *, timeout: float = 600.0, interval: float = 2.0) -> m.Data_TaskData:
        """Polls a task until COMPLETED (returns its data) or FAILED (raises
        OperationFailedError), waiting as the server's ``Retry-After`` says and
        sending ``If-None-Match``, so unchanged polls cost no quota."""
        path = f"/api/v1/services/task/{_quote(task_id)}/status"
        return self._poll(  # type: ignore[no-any-return]
            lambda: self.send("GET", path, conditional=True), self._task_done(task_id), f"task {task_id}", timeout, interval
        )

    def wait_for_order(self, order_id: str, *, timeout: float = 600.0, interval: float = 2.0) -> m.Data_OrderResponse:
        """Polls an order until COMPLETED or ASSIGNED; raises OperationFailedError
        on FAILED, CANCELLED or REJECTED."""
        path = f"/api/v1/purchase/{_quote(order_id)}"
        return self._poll(  # type: ignore[no-any-return]
            lambda: self.send("GET", path, conditional=True), self._order_done(order_id), f"order {order_id}", timeout, interval
        )


class AsyncClient(_Base, AsyncOperations):
    """The asynchronous client (asyncio). Use ``async with``, or ``await aclose()``.
    Cancelling the awaiting task aborts a call or a wait."""

    def __init__(
        self,
        api_key: Optional[str] = None,
        base_url: Optional[str] = None,
        *,
        transport: Optional[httpx.AsyncBaseTransport] = None,
        **options: Any,
    ) -> None:
        super().__init__(api_key, base_url, **options)
        self._http = httpx.AsyncClient(transport=transport, timeout=self.timeout)

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def send(
        self,
        method: str,
        path: str,
        *,
        query: Optional[Dict[str, Any]] = None,
        body: Optional[Dict[str, Any]] = None,
        conditional: bool = False,
        timeout: Optional[float] = None,
        idempotency_key: Optional[str] = None,
    ) -> Tuple[Any, httpx.Headers]:
        """One operation: its ``data`` and the answer's headers."""
        prep = self._prepare(method, path, query, body, conditional, idempotency_key)
        attempt = 0
        while True:
            try:
                response = await self._http.request(
                    prep.method,
                    prep.url,
                    params=prep.params,
                    headers=prep.headers,
                    content=prep.content,
                    timeout=timeout if timeout is not None else self.timeout,
                )
            except httpx.TransportError as err:
                if self._can_retry_transport(prep, attempt):
                    await asyncio.sleep(min(0.25 * 2**attempt, 5.0))
                    attempt += 1
                    continue
                raise _transport_error(err) from err
            kind, value = self._outcome(prep, response, attempt)
            if kind == "done":
                return value  # type: ignore[no-any-return]
            await asyncio.sleep(value)
            attempt += 1

    async def _request(self, method: str, path: str, *, operation_id: str, **kw: Any) -> Any:
        return (await self.send(method, path, **kw))[0]

    async def _poll(self, path: str, done: Callable[[Any], bool], what: str, timeout: float, interval: float) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            data, headers = await self.send("GET", path, conditional=True)
            if done(data):
                return data
            hint = _header_int(headers, "retry-after")
            left = deadline - time.monotonic()
            if left <= 0:
                raise WaitTimeoutError(f"Gave up waiting for {what} after {timeout} s", data)
            await asyncio.sleep(min(float(hint) if hint is not None else interval, left))

    async def wait_for_task(self, task_id: str, *, timeout: float = 600.0, interval: float = 2.0) -> m.Data_TaskData:
        """See ``Client.wait_for_task``."""
        path = f"/api/v1/services/task/{_quote(task_id)}/status"
        return await self._poll(path, self._task_done(task_id), f"task {task_id}", timeout, interval)  # type: ignore[no-any-return]

    async def wait_for_order(self, order_id: str, *, timeout: float = 600.0, interval: float = 2.0) -> m.Data_OrderResponse:
        """See ``Client.wait_for_order``."""
        path = f"/api/v1/purchase/{_quote(order_id)}"
        return await self._poll(path, self._order_done(order_id), f"order {order_id}", timeout, interval)  # type: ignore[no-any-return]


def _quote(value: str) -> str:
    from urllib.parse import quote

    return quote(str(value), safe="")


AnyClient = Union[Client, AsyncClient]
