from django.conf import settings
from rest_framework import serializers

from feeds.cursor import InvalidCursor, cursor_decode
from posts.serializers import PostSerializer


class FeedQuerySerializer(serializers.Serializer):
    limit = serializers.IntegerField(
        min_value=1, max_value=settings.FEED_PAGE_MAX, default=settings.FEED_PAGE_SIZE
    )
    cursor = serializers.CharField(
        required=False, max_length=64, help_text="The next_cursor of the previous page."
    )

    def validate_cursor(self, value: str) -> int:
        try:
            return cursor_decode(value)
        except InvalidCursor as exc:
            raise serializers.ValidationError(str(exc)) from None

    def validate(self, attrs: dict) -> dict:
        # A parameter the API does not know is a mistake, and would otherwise make a first
        # page the cache cannot answer (the fast path answers only a bare URL).
        unknown = sorted(set(self.initial_data) - set(self.fields))
        if unknown:
            raise serializers.ValidationError({name: ["Unknown query parameter."] for name in unknown})
        return attrs


class FeedPageSerializer(serializers.Serializer):
    """The shape of a feed page; documents the API."""

    results = PostSerializer(many=True)
    next_cursor = serializers.CharField(allow_null=True, help_text="Null on the last page.")
