"""The query of a cursor-paged list: ``limit`` and ``cursor``, nothing else."""

from django.conf import settings
from rest_framework import serializers

from core.cursor import InvalidCursor, cursor_decode


class PageQuerySerializer(serializers.Serializer):
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
        # A parameter the API does not know is a mistake (and, for a feed, would make a
        # first page the cache cannot answer: the fast path answers only a bare URL).
        unknown = sorted(set(self.initial_data) - set(self.fields))
        if unknown:
            raise serializers.ValidationError({name: ["Unknown query parameter."] for name in unknown})
        # An empty value would count as none given (query strings are read as form data):
        # ?cursor= is a malformed cursor, not the first page.
        blank = sorted(name for name in self.fields if self.initial_data.get(name) == "")
        if blank:
            raise serializers.ValidationError({name: ["This field may not be blank."] for name in blank})
        return attrs
