"""Schemathesis checks specific to advps, loaded by .ci/fuzz (SCHEMATHESIS_HOOKS).

The reference documents some 500 answers on purpose (e.g. "Failed to start
service: service is already running"), so the stock `not_a_server_error`
check cannot be used as is; this one fails on every other 5xx.
"""

import json

import schemathesis

# The 500 messages the API documents; anything else from a 5xx is a bug.
DOCUMENTED_500_PREFIXES = ("Failed to ",)
DOCUMENTED_500_MESSAGES = {"No OS templates available for the selected OS"}


@schemathesis.check
def no_undocumented_server_error(ctx, response, case):
    """A 5xx is allowed only with a documented operation-failure message."""
    if response.status_code < 500:
        return None
    try:
        message = json.loads(response.content).get("message", "")
    except (ValueError, AttributeError):
        message = ""
    if message in DOCUMENTED_500_MESSAGES or message.startswith(DOCUMENTED_500_PREFIXES):
        return None
    raise AssertionError(
        f"undocumented server error {response.status_code}: {response.content[:300]!r}"
    )
