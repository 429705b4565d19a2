"""``PUT /_matrix/federation/v1/send/{txnId}``: transactions other servers send us.

Spec: Server-Server API, "Transactions". The work is done by
:class:`mxtwisted.federation.receiver.TransactionReceiver`; this resource
authenticates the origin (X-Matrix) and reads the body.
"""

from __future__ import annotations

from typing import Any

from mxtwisted.api.federation.rooms import V1, federation_route
from mxtwisted.http.resource import parse_json_object
from mxtwisted.http.router import Router


class FederationTransactionsResource:
    def __init__(self, receiver: Any) -> None:
        self.receiver = receiver

    def register(self, router: Router, authenticator: Any) -> None:
        router.add("PUT", V1 + "/send/{txnId}", federation_route(authenticator, self.send))

    async def send(self, request: Any, origin: str, txnId: str) -> dict[str, Any]:
        body = parse_json_object(request)
        return await self.receiver.on_transaction(origin, txnId, body)


def register_transactions(router: Router, components: Any) -> None:
    """Register ``/send``. The receiver (``components.federation_receiver``) is made on first use and shared
    by every listener, so a repeated transaction is recognised whichever listener it reaches."""
    from mxtwisted.federation.receiver import TransactionReceiver

    federation = components.federation
    if getattr(components, "federation_receiver", None) is None:
        components.federation_receiver = TransactionReceiver(
            components.rooms, getattr(federation, "keyring", None), getattr(federation, "client", None)
        )
        # Typing, receipts and presence of other servers (mxtwisted.federation.edus).
        components.federation_receiver.edu_handler = getattr(components, "federation_edus", None)
    FederationTransactionsResource(components.federation_receiver).register(router, federation.authenticator)
