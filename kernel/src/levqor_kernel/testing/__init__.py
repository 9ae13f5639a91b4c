"""The connector contract kit. ``pip install levqor-kernel`` registers it as a pytest plugin.

* :class:`ConnectorContract`: subclass it in your tests, set ``plugin`` and tell it how to
  point your connector at a fake server; it checks schemas, examples, fail-closed
  behaviour on 401, 429 (with Retry-After), 5xx, timeouts and malformed responses, and
  that no secret leaks into an error message.
* :class:`PollingTriggerContract`, :class:`InstantTriggerContract`: the same for triggers,
  run against your connector's own fake (first-poll baseline, new items with stable ids, the
  cursor, error mapping; registration, signature refusal, handshakes, one item per event).
* :class:`OAuthContract`: a connector declaring ``oauth2`` accepts the stored OAuth2 credential,
  sends ``Authorization: Bearer <access_token>``, maps a 401 to ``CredentialError(status=401)``
  and names the connected account.
* ``fake_server`` fixture: a :class:`FakeServer` on 127.0.0.1, stopped after the test.
* :func:`check_connector`, :func:`check_polling_trigger`, :func:`check_instant_trigger`,
  :func:`check_oauth`: the same checks as functions (``levqor connector check`` uses the first).
"""

from .adapter import FakeAdapter, error_body
from .contract import ConnectorContract, ContractResult, check_connector
from .fakeserver import FakeServer, Recorded, Reply
from .oauth_contract import OAuthContract, check_oauth
from .triggers import (
    InstantTriggerContract,
    PollingTriggerContract,
    check_instant_trigger,
    check_polling_trigger,
)

__all__ = [
    "ConnectorContract",
    "ContractResult",
    "FakeAdapter",
    "FakeServer",
    "InstantTriggerContract",
    "OAuthContract",
    "PollingTriggerContract",
    "Recorded",
    "Reply",
    "check_connector",
    "check_instant_trigger",
    "check_oauth",
    "check_polling_trigger",
    "error_body",
]
