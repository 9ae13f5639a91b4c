"""The connector contract kit. ``pip install levqor-kernel`` registers it as a pytest plugin.

* :class:`ConnectorContract`: subclass it in your tests, set ``plugin`` and tell it how to
  point your connector at a fake server; it checks schemas, examples, fail-closed
  behaviour on 401, 429 (with Retry-After), 5xx, timeouts and malformed responses, and
  that no secret leaks into an error message.
* ``fake_server`` fixture: a :class:`FakeServer` on 127.0.0.1, stopped after the test.
* :func:`check_connector`: the same checks as a function (used by ``levqor connector check``).
"""

from .contract import ConnectorContract, ContractResult, check_connector
from .fakeserver import FakeServer, Recorded, Reply

__all__ = [
    "ConnectorContract",
    "ContractResult",
    "check_connector",
    "FakeServer",
    "Recorded",
    "Reply",
]
