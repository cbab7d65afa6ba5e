"""Standard Webhooks verification of the deliveries advps sends.

``webhook-signature`` carries ``v1,<base64 HMAC-SHA256>`` of
``{webhook-id}.{webhook-timestamp}.{body}`` under the endpoint's ``whsec_``
secret, one signature per secret in force (two after a rotation, until the
old secret expires); the timestamp must be within the tolerance.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from typing import Any, Mapping, Optional, Sequence, Union

__all__ = ["WebhookVerificationError", "verify_webhook"]


class WebhookVerificationError(Exception):
    """The delivery is not authentic, or too old or too new."""


def _header(headers: Mapping[str, Any], name: str) -> Optional[str]:
    getter = getattr(headers, "get", None)
    value = getter(name) if getter else None
    if value is None:
        for k, v in headers.items():
            if k.lower() == name:
                value = v
                break
    if isinstance(value, (list, tuple)):
        value = " ".join(value)
    return value


def _secret_bytes(secret: str) -> bytes:
    raw = secret[len("whsec_"):] if secret.startswith("whsec_") else secret
    try:
        return base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError) as err:
        raise WebhookVerificationError("The secret is not a whsec_ base64 secret") from err


def verify_webhook(
    secret: Union[str, Sequence[str]],
    headers: Mapping[str, Any],
    body: Union[bytes, str],
    *,
    tolerance: float = 300,
    now: Optional[float] = None,
) -> Any:
    """Checks a delivery and returns its parsed JSON payload.

    ``secret`` is one ``whsec_`` secret or several (the old and the new one
    during a rotation); ``body`` is the raw body exactly as received.
    Raises WebhookVerificationError when the delivery does not verify.
    """
    msg_id = _header(headers, "webhook-id")
    timestamp = _header(headers, "webhook-timestamp")
    signatures = _header(headers, "webhook-signature")
    if not msg_id or not timestamp or not signatures:
        raise WebhookVerificationError("Missing webhook-id, webhook-timestamp or webhook-signature")
    if not timestamp.isdigit():
        raise WebhookVerificationError("Invalid webhook-timestamp")
    current = time.time() if now is None else now
    ts = int(timestamp)
    if ts < current - tolerance:
        raise WebhookVerificationError("Timestamp too old")
    if ts > current + tolerance:
        raise WebhookVerificationError("Timestamp too new")
    raw = body.encode() if isinstance(body, str) else bytes(body)
    message = f"{msg_id}.{timestamp}.".encode() + raw
    offered = [s[3:] for s in signatures.split(" ") if s.startswith("v1,")]
    secrets = [secret] if isinstance(secret, str) else list(secret)
    for s in secrets:
        expected = base64.b64encode(hmac.new(_secret_bytes(s), message, hashlib.sha256).digest()).decode()
        if any(hmac.compare_digest(o, expected) for o in offered):
            try:
                return json.loads(raw)
            except ValueError as err:
                raise WebhookVerificationError("The body is not JSON") from err
    raise WebhookVerificationError("No matching signature")
