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
