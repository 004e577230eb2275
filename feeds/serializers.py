from rest_framework import serializers

from core.paging import PageQuerySerializer
from posts.serializers import PostSerializer


class FeedQuerySerializer(PageQuerySerializer):
    """A feed page's query: ``limit`` and ``cursor``."""


class FeedPageSerializer(serializers.Serializer):
    """The shape of a feed page; documents the API."""

    results = PostSerializer(many=True)
    next_cursor = serializers.CharField(allow_null=True, help_text="Null on the last page.")


# Ids beyond bigint cannot exist.
MAX_ID = 2**63 - 1


class StrictSerializer(serializers.Serializer):
    """A body whose keys the API does not know is refused: a misspelt key would otherwise
    be ignored in silence."""

    def to_internal_value(self, data):
        if isinstance(data, dict):
            unknown = sorted(set(data) - set(self.fields))
            if unknown:
                raise serializers.ValidationError({name: ["Unknown field."] for name in unknown})
        return super().to_internal_value(data)


class MarkerSerializer(serializers.Serializer):
    last_read_id = serializers.IntegerField(help_text="The id of the newest post read.")
    version = serializers.IntegerField(help_text="Raised by one with each change.")
    updated_at = serializers.DateTimeField()


class MarkerMoveSerializer(StrictSerializer):
    last_read_id = serializers.IntegerField(min_value=1, max_value=MAX_ID)
    version = serializers.IntegerField(
        min_value=0,
        max_value=MAX_ID,
        required=False,
        help_text="The version the client last saw (0: none yet); another current one is a 409.",
    )


class MarkersMoveSerializer(StrictSerializer):
    home = MarkerMoveSerializer()


class MarkersSerializer(serializers.Serializer):
    """The user's markers; documents the API."""

    home = MarkerSerializer(allow_null=True)


class UnreadSerializer(serializers.Serializer):
    count = serializers.IntegerField(help_text="Entries newer than the home marker, up to 100.")
    capped = serializers.BooleanField(help_text="Whether there are more than 100.")
