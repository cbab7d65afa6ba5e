"""Client for the ADVPS API v1 (VPS and Linux containers by API).

``Client`` (synchronous) and ``AsyncClient`` (asyncio) carry one method per
operation, grouped as the documentation groups them (``client.services.
rebuild(...)``, ``client.tasks.status(...)``, ``client.me()``), each
returning the answer's ``data`` as a typed dict (models in ``advps.models``)
and raising ``AdvpsError`` on failure. ``verify_webhook`` checks the signed
deliveries of webhook endpoints.
"""

from . import _models as models
from ._client import (
    VERSION,
    AdvpsError,
    AsyncClient,
    Client,
    OperationFailedError,
    RateLimit,
    WaitTimeoutError,
)
from ._operations import OPERATIONS
from .webhooks import WebhookVerificationError, verify_webhook

__version__ = VERSION

__all__ = [
    "OPERATIONS",
    "AdvpsError",
    "AsyncClient",
    "Client",
    "OperationFailedError",
    "RateLimit",
    "WaitTimeoutError",
    "WebhookVerificationError",
    "__version__",
    "models",
    "verify_webhook",
]
