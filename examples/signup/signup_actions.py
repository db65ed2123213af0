"""Actions of the signup machine (examples/signup/fsm.yaml).

The verification link is "mailed" by writing it to a file under ``params.outbox``
(default ``.fsm/outbox/<correlation id>.txt``, relative to the current directory), so
the example runs with no mail server: read the token there and send it back with
``fsm send ID VERIFY --data '{"token": "..."}'``.

Only a hash of the token is kept in the context: ``fsm status`` shows the context, and
the stored record must not be enough to verify someone else's address. The token itself
is an HMAC of the correlation id and the number of links sent, so a retried transition
mails the same link again instead of a second, different one.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import time
from pathlib import Path
from typing import Any

from fsm import Action, Context

EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")


def _token(secret: str, correlation_id: str, links_sent: int) -> str:
    message = f"{correlation_id}:{links_sent}".encode()
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()[:32]


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


class CreateAccount(Action):
    """Check the address given with ``--context '{"email": ...}'`` and open an
    unverified account. A bad address ends the signup at once: retrying cannot fix it."""

    def execute(self, context: Context, obj: dict[str, Any]) -> str | None:
        email = str(context.get("email", "")).strip().lower()
        if not EMAIL.fullmatch(email):
            context["problem"] = f"not an email address: {context.get('email')!r}"
            return "invalid_email"
        context["email"] = email
        context["user_id"] = "usr_" + _sha256(email)[:10]
        context["verified"] = False
        context["links_sent"] = 0
        context["failed_attempts"] = 0
        return "created"


class SendVerificationLink(Action):
    """Mail a new link; the previous one stops working, since only the newest token's
    hash is kept. ``expires_at`` is checked again by :class:`CheckToken`, so the expiry
    holds even when a VERIFY arrives before the state's timeout has fired."""

    def execute(self, context: Context, obj: dict[str, Any]) -> str | None:
        secret = os.environ.get("SIGNUP_SECRET") or str(self.params.get("secret", "demo-secret"))
        context["links_sent"] += 1
        token = _token(secret, context.correlation_id, context["links_sent"])
        context["token_sha256"] = _sha256(token)
        context["expires_at"] = round(time.time() + float(self.params.get("valid_for", 86400)), 3)
        outbox = Path(str(self.params.get("outbox", ".fsm/outbox")))
        outbox.mkdir(parents=True, exist_ok=True)
        (outbox / f"{context.correlation_id}.txt").write_text(
            f"To: {context['email']}\nSubject: confirm your address\n\n"
            f"https://example.com/verify?id={context.correlation_id}&token={token}\n"
            f"token: {token}\n", encoding="utf-8")
        return "sent"


class CheckToken(Action):
    """VERIFY with data ``{"token": ...}``: the token is compared with the hash in the
    context (in constant time), then dropped from the context.

    A wrong token goes back to waiting and counts as a failed attempt; after
    ``params.max_attempts`` of them the signup is locked, so the token cannot be guessed.
    """

    def execute(self, context: Context, obj: dict[str, Any]) -> str | None:
        given = str(context.pop("token", ""))
        if time.time() > context["expires_at"]:
            return "expired"
        if given and hmac.compare_digest(_sha256(given), context["token_sha256"]):
            return "valid"
        context["failed_attempts"] += 1
        if context["failed_attempts"] >= int(self.params.get("max_attempts", 3)):
            return "too_many_attempts"
        return "invalid"


class ActivateAccount(Action):
    """Verified: the account may log in; the token hash is no longer needed."""

    def execute(self, context: Context, obj: dict[str, Any]) -> str | None:
        context["verified"] = True
        context.pop("token_sha256", None)
        return None


class CloseUnverified(Action):
    """Expired or locked: forget the token so no old link can be replayed, and say why."""

    def execute(self, context: Context, obj: dict[str, Any]) -> str | None:
        context.pop("token_sha256", None)
        context["closed_because"] = str(context.current_state.name if context.current_state else "closed")
        return None
