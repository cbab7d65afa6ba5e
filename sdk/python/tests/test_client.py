"""Every operation of the synchronous client against the real server: data
typed and unwrapped, errors as AdvpsError, ETag polls free of quota,
wait_for_task and wait_for_order, page iterators, and an idempotent retry
that charges once."""

from __future__ import annotations

import re
from typing import Any, List, Set

import httpx
import pytest

from advps import OPERATIONS, AdvpsError, Client, OperationFailedError, WaitTimeoutError

CALLED: Set[str] = set()


class Recording(httpx.BaseTransport):
    """Records each exchange; optionally loses the first POST's answer after
    the server has done the work."""

    def __init__(self, lose_first_post: bool = False) -> None:
        self.inner = httpx.HTTPTransport()
        self.exchanges: List[Any] = []
        self.lose = lose_first_post

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        response.read()
        self.exchanges.append((request, response))
        if self.lose and request.method == "POST":
            self.lose = False
            raise httpx.ReadError("connection reset", request=request)
        return response


@pytest.fixture(scope="module")
def rec() -> Recording:
    return Recording()


@pytest.fixture(scope="module")
def client(server: Any, rec: Recording) -> Any:
    c = Client(server.api_key, server.base_url, transport=rec)
    original = c._request

    def recording(method: str, path: str, *, operation_id: str, **kw: Any) -> Any:
        CALLED.add(operation_id)
        return original(method, path, operation_id=operation_id, **kw)

    c._request = recording  # type: ignore[method-assign]
    yield c
    c.close()


def test_me_livez_health_and_rate_limit_state(client: Client) -> None:
    me = client.me()
    assert me["account"] == "demo"
    assert me["keyPrefix"] == "sk_test_"
    assert me["rateLimit"]["limit"] == 1000
    assert me["mode"] == "test"
    assert client.rate_limit is not None and client.rate_limit.limit == 1000
    assert client.last_request_id == me["requestId"]
    assert client.livez()["status"] == "ok"
    assert client.health()["status"] == "ok"


def test_stock_product_and_os(client: Client) -> None:
    page = client.products.stock(limit=100)
    assert len(page["stock"]) > 3
    linux = client.products.stock(type="linux", limit=100)
    assert linux["stock"] and all(r["vmType"] == "LXC" for r in linux["stock"])
    one = client.products.get_stock(page["stock"][0]["id"])
    assert one["stock"]["id"] == page["stock"][0]["id"]
    assert any(o["slug"] == "debian-12" for o in client.os.list(type="lxc")["os"])


def test_pagination_walks_every_page(client: Client, rec: Recording) -> None:
    everything = [r["id"] for r in client.products.stock(limit=100)["stock"]]
    before = len(rec.exchanges)
    walked = [r["id"] for r in client.products.stock_all(limit=3)]
    assert walked == everything
    assert len(rec.exchanges) - before == -(-len(everything) // 3), "one request per page"


def test_a_304_poll_costs_no_quota(client: Client, rec: Recording) -> None:
    r0 = client.me()["rateLimit"]["remaining"]
    first = client.services.status("vps_service_1")
    r1 = client.me()["rateLimit"]["remaining"]
    second = client.services.status("vps_service_1")
    r2 = client.me()["rateLimit"]["remaining"]
    assert r0 - r1 == 1
    assert r1 == r2
    assert second == first
    polls = [(q, a) for q, a in rec.exchanges if q.url.path.endswith("/services/vps_service_1/status")]
    assert polls[-1][1].status_code == 304
    assert polls[-1][0].headers.get("if-none-match")


def test_power_ip_mac_password(client: Client) -> None:
    assert client.services.start("vps_service_2")["serviceId"] == "vps_service_2"
    assert client.services.stop("vps_service_2", mode="force")["powerMode"] == "forced"
    assert client.services.reboot("vps_service_1")["serviceId"] == "vps_service_1"
    assert client.services.configure_ip("vps_service_1")["status"] == "IP_CONFIGURED"
    assert re.fullmatch(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}", client.services.reset_mac("vps_service_1")["mac"])
    assert len(client.services.generate_password("vps_service_1")["password"]) >= 12


def test_errors_carry_status_message_request_id_and_rate_limit(client: Client) -> None:
    with pytest.raises(AdvpsError) as info:
        client.services.start("no_such_service")
    err = info.value
    assert err.status == 404
    assert err.message == "Service not found or not accessible"
    assert err.request_id and err.request_id.startswith("req_")
    assert err.rate_limit is not None and err.rate_limit.limit == 1000
    with pytest.raises(AdvpsError) as bad:
        client.products.stock(type="windows")  # type: ignore[arg-type]
    assert bad.value.status == 400


def test_wait_for_task_on_a_rebuild_that_completes(client: Client) -> None:
    rebuild = client.services.rebuild("vps_service_1", os="debian-12")
    assert rebuild["status"] == "PENDING"
    assert client.tasks.status(rebuild["taskId"])["taskId"] == rebuild["taskId"]
    done = client.wait_for_task(rebuild["taskId"], timeout=60)
    assert done["status"] == "COMPLETED"
    assert done["progress"] == 100


def test_wait_for_task_on_sandbox_fail(client: Client) -> None:
    rebuild = client.services.rebuild("lxc_service_1", os="sandbox-fail")
    with pytest.raises(OperationFailedError) as info:
        client.wait_for_task(rebuild["taskId"], timeout=60)
    assert info.value.result["status"] == "FAILED"
    assert info.value.result["error"]


def test_wait_for_task_times_out(client: Client) -> None:
    rebuild = client.services.rebuild("vps_service_1", os="ubuntu-24.04")
    with pytest.raises(WaitTimeoutError):
        client.wait_for_task(rebuild["taskId"], timeout=0.2)
    client.wait_for_task(rebuild["taskId"], timeout=60)


def test_purchase_wait_for_order_credentials_and_renew(client: Client) -> None:
    # Three days: inside the renewal window at once.
    placed = client.purchase.linux(product_id="prod_abc123", ram="4 GB", os_id="debian-12", validity=3)
    assert placed["order"]["status"] == "PENDING"
    done = client.wait_for_order(placed["order"]["orderId"], timeout=60)
    assert done["order"]["status"] == "COMPLETED"
    service = done["services"][0]
    assert service["password"]
    assert service["username"] == "root"
    assert client.orders.get(placed["order"]["orderId"])["order"]["orderId"] == placed["order"]["orderId"]
    renewed = client.services.renew(order_id=placed["order"]["orderId"], service_ids=[service["serviceId"]])
    assert renewed["orderId"] == placed["order"]["orderId"]
    vps = client.purchase.vps(product_id="prod_stu901", ram="1 GB", name="web-1", email="ops@example.com")
    assert vps["order"]["productId"] == "prod_stu901"


def test_an_idempotent_retry_after_a_lost_answer_charges_once(server: Any, client: Client) -> None:
    def stock() -> int:
        with Client(server.api_key, server.base_url, conditional_requests=False) as fresh:
            return fresh.products.get_stock("prod_def456")["stock"]["stock"]

    before = stock()
    lossy_transport = Recording(lose_first_post=True)
    with Client(server.api_key, server.base_url, transport=lossy_transport) as lossy:
        placed = lossy.purchase.linux(product_id="prod_def456", ram="2 GB")
    posts = [q for q, _ in lossy_transport.exchanges if q.method == "POST"]
    assert len(posts) == 2, "sent twice"
    keys = {q.headers.get("idempotency-key") for q in posts}
    assert len(keys) == 1 and None not in keys, "under one Idempotency-Key"
    assert before - stock() == 1, "one unit of stock taken, not two"
    assert placed["order"]["orderId"]
    # Without idempotency a lost answer is not retried.
    with Client(server.api_key, server.base_url, transport=Recording(lose_first_post=True), idempotency=False) as once:
        with pytest.raises(AdvpsError) as info:
            once.services.reboot("vps_service_1", mode="force")
        assert info.value.status == 0


def test_webhook_endpoint_operations(client: Client) -> None:
    created = client.webhooks.create(url="http://127.0.0.1:9/none", events=["order.completed"])
    assert created["secret"] and created["secret"].startswith("whsec_")
    assert any(w["id"] == created["id"] for w in client.webhooks.list()["webhooks"])
    assert client.webhooks.get(created["id"])["id"] == created["id"]
    assert client.webhooks.deliveries(created["id"], limit=10)["deliveries"] == []
    assert client.webhooks.rotate_secret(created["id"])["secret"] != created["secret"]
    with pytest.raises(AdvpsError) as info:
        client.webhooks.redeliver(created["id"], "msg_nope")
    assert info.value.status == 404
    assert client.webhooks.delete(created["id"])


def test_audit_pages_and_iterator(client: Client) -> None:
    page = client.audit.list(limit=100)
    assert len(page["entries"]) > 4
    walked = [e["id"] for e in client.audit.list_all(limit=2)]
    assert walked[: len(page["entries"])] == [e["id"] for e in page["entries"]]
    assert all(e["serviceId"] == "vps_service_1" for e in client.audit.list(service_id="vps_service_1", limit=100)["entries"])


def test_every_operation_was_called(client: Client) -> None:
    # Operations added to the server after these tests were written are
    # called generically (sandbox ids for path parameters) and must answer
    # without a server error, so that a regenerated client stays exercised.
    ids = {"serviceId": "vps_service_1", "id": "prod_abc123"}
    for op_id, name, method, path in OPERATIONS:
        if op_id in CALLED:
            continue
        concrete = re.sub(r"{([^}]+)}", lambda mm: ids.get(mm.group(1), "none"), path)
        try:
            client.send(method, concrete, body={} if method == "POST" else None)
        except AdvpsError as err:
            assert 400 <= err.status < 500, f"{name}: {err.status} {err.message}"
        CALLED.add(op_id)
    assert {o[0] for o in OPERATIONS} <= CALLED
