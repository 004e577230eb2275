import re
from typing import Any

from django.conf import settings
from rest_framework import serializers

from core.fields import StrictCharField
from posts.models import Post


class PostCreateSerializer(serializers.Serializer):
    content = StrictCharField()

    def validate_content(self, value: str) -> str:
        limit = settings.POST_MAX_LENGTH
        if len(value) > limit:
            raise serializers.ValidationError(f"Ensure this field has no more than {limit} characters.")
        return value


class PostSerializer(serializers.Serializer):
    """The shape ``post_json`` renders; documents the API."""

    id = serializers.IntegerField()
    author_id = serializers.IntegerField()
    author = serializers.CharField()
    content = serializers.CharField()
    created_at = serializers.DateTimeField()


def post_json(post: Post, *, author_username: str | None = None) -> dict[str, Any]:
    """A post as the API shows it, everywhere: on its own and inside feed pages."""
    created_at = post.created_at.isoformat()
    if created_at.endswith("+00:00"):
        created_at = created_at[:-6] + "Z"
    return {
        "id": post.pk,
        "author_id": post.author_id,
        "author": author_username if author_username is not None else post.author.get_username(),
        "content": post.content,
        "created_at": created_at,
    }


# Longest Idempotency-Key accepted, in characters (without the quotes).
IDEMPOTENCY_KEY_MAX_LENGTH = 255
# The IETF draft's form: a Structured Field String ("..." of printable ASCII, with \" and
# \\ escaped); the bare form most clients send: visible ASCII without quotes or backslashes.
_SF_STRING = re.compile(r'"((?:[\x20\x21\x23-\x5b\x5d-\x7e]|\\["\\])*)"')
_BARE = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]+")


def idempotency_key_parse(raw: str | None) -> str | None:
    """The key of an ``Idempotency-Key`` header, or None without one; raises ValidationError
    for one that is empty, malformed or longer than IDEMPOTENCY_KEY_MAX_LENGTH."""
    if raw is None:
        return None
    raw = raw.strip(" \t")
    if quoted := _SF_STRING.fullmatch(raw):
        key = re.sub(r"\\(.)", r"\1", quoted[1])
    elif _BARE.fullmatch(raw):
        key = raw
    else:
        raise serializers.ValidationError(
            {"Idempotency-Key": ['Must be a quoted string of printable ASCII, e.g. "8e03978e-40d5".']}
        )
    if not key:
        raise serializers.ValidationError({"Idempotency-Key": ["Must not be empty."]})
    if len(key) > IDEMPOTENCY_KEY_MAX_LENGTH:
        raise serializers.ValidationError(
            {"Idempotency-Key": [f"Ensure it has no more than {IDEMPOTENCY_KEY_MAX_LENGTH} characters."]}
        )
    return key
