"""``auth``: token authentication (``[auth] token`` / ``AUTHENTICATION_TOKEN``).

With no token configured every peer is accepted as soon as it connects. With a token, a peer is
accepted on a ``module:authenticate`` whose token matches, compared in constant time; anything
else is refused with ``invalid token``. Registered ``trylast`` so another plugin can accept
other credentials first.
"""

from __future__ import annotations

import hashlib
import hmac

from airi_core import ACCEPT, Accept, Reject, errors, hookimpl
from airi_core.server.kernel import Hub


def tokens_match(given: str, expected: str) -> bool:
    """Constant-time comparison that also hides the expected token's length."""
    a = hashlib.sha256(given.encode("utf-8", "surrogatepass")).digest()
    b = hashlib.sha256(expected.encode("utf-8", "surrogatepass")).digest()
    return hmac.compare_digest(a, b)


class TokenAuth:
    @hookimpl(trylast=True)
    def airi_authenticate(self, hub: Hub, token: str | None) -> Accept | Reject | None:
        expected = hub.settings.auth.secret
        if not expected:
            return ACCEPT
        if token is None:  # connect time: wait for module:authenticate
            return None
        return ACCEPT if tokens_match(token, expected) else Reject(errors.INVALID_TOKEN)
