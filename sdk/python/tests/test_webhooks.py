"""verify_webhook against deliveries the server really sent to a local
receiver (private destinations allowed for the test), before and during a
secret rotation, and against tampered, stale and foreign messages."""

from __future__ import annotations

import base64
import time
from typing import Any

import pytest

from advps import Client, WebhookVerificationError, verify_webhook

from conftest import Receiver, task_of


def rebuild_and_receive(client: Client, receiver: Receiver) -> Any:
    task_id = client.services.rebuild("vps_service_1", os="debian-12")["taskId"]
    client.wait_for_task(task_id, timeout=60)
    return receiver.next(lambda d: task_of(d) == task_id)


def test_a_real_delivery_verifies_and_forgeries_do_not(server: Any, receiver: Receiver) -> None:
    with Client(server.api_key, server.base_url) as client:
        hook = client.webhooks.create(url=receiver.url, events=["task.completed"])
        secret = hook["secret"]
        assert secret
        delivery = rebuild_and_receive(client, receiver)
        headers, body = delivery["headers"], delivery["body"]
        assert verify_webhook(secret, headers, body)["type"] == "task.completed"
        assert len(headers["webhook-signature"].split(" ")) == 1
        with pytest.raises(WebhookVerificationError):
            verify_webhook(secret, headers, body.replace(b"COMPLETED", b"FAILED"))
        with pytest.raises(WebhookVerificationError, match="too old"):
            verify_webhook(secret, headers, body, now=time.time() + 600)
        with pytest.raises(WebhookVerificationError, match="No matching"):
            verify_webhook("whsec_" + base64.b64encode(bytes(32)).decode(), headers, body)
        with pytest.raises(WebhookVerificationError, match="Missing"):
            verify_webhook(secret, {k: v for k, v in headers.items() if k.lower() != "webhook-id"}, body)
        assert verify_webhook(secret, headers, body.decode())["type"] == "task.completed"
        log = client.webhooks.deliveries(hook["id"])["deliveries"]
        assert any(d["id"] == headers["webhook-id"] for d in log)
        assert client.webhooks.redeliver(hook["id"], headers["webhook-id"])
        client.webhooks.delete(hook["id"])


def test_during_a_rotation_both_secrets_verify(server: Any, receiver: Receiver) -> None:
    with Client(server.api_key, server.base_url) as client:
        hook = client.webhooks.create(url=receiver.url, events=["task.completed"])
        rotated = client.webhooks.rotate_secret(hook["id"])
        assert rotated["previousSecretValidUntil"]
        delivery = rebuild_and_receive(client, receiver)
        headers, body = delivery["headers"], delivery["body"]
        assert len(headers["webhook-signature"].split(" ")) == 2, "signed with both secrets"
        for secrets in (hook["secret"], rotated["secret"], [rotated["secret"], hook["secret"]]):
            assert verify_webhook(secrets, headers, body)["type"] == "task.completed"
        client.webhooks.delete(hook["id"])
