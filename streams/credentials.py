"""Who opens a stream: the feed's own authorisation, an API token in the Authorization
header or the web page's session cookie, never a token in the URL."""

import re
from dataclasses import dataclass
from importlib import import_module
from types import SimpleNamespace

from django.conf import settings
from django.contrib.auth import get_user, get_user_model
from rest_framework.authtoken.models import Token

from follows.activity import reader_seen_marked

User = get_user_model()
# DRF's keys are 40 hexadecimal digits; anything else is no key of ours.
_TOKEN_KEY = re.compile(r"[0-9a-fA-F]{1,64}")


@dataclass(frozen=True)
class Credential:
    """A stream's user and what it was opened with: the stream ends when the token or the
    session goes, or the user is deactivated or changes password (``password``, the hash
    when it opened)."""

    user_id: int
    is_staff: bool
    password: str
    token: str | None = None
    session: str | None = None


def credential_of(*, authorization: str | None, session_key: str | None) -> Credential | None:
    """The credential a request carries, or None: a token takes precedence over a session."""
    if authorization is not None:
        keyword, _, key = authorization.partition(" ")
        key = key.strip()
        if keyword.lower() != "token" or not _TOKEN_KEY.fullmatch(key):
            return None
        token = Token.objects.select_related("user").filter(key=key).first()
        if token is None or not token.user.is_active:
            return None
        user = token.user
        credential = Credential(user.pk, user.is_staff, user.password, token=key)
    elif session_key:
        engine = import_module(settings.SESSION_ENGINE)
        # Django's own check: the session's user, active, with the password it signed in with.
        user = get_user(SimpleNamespace(session=engine.SessionStore(session_key)))
        if not user.is_authenticated:
            return None
        credential = Credential(user.pk, user.is_staff, user.password, session=session_key)
    else:
        return None
    reader_seen_marked(user_id=credential.user_id)
    return credential
