from rest_framework import serializers

from core.paging import PageQuerySerializer
from posts.serializers import PostSerializer


class FeedQuerySerializer(PageQuerySerializer):
    """A feed page's query: ``limit`` and ``cursor``."""


class FeedPageSerializer(serializers.Serializer):
    """The shape of a feed page; documents the API."""

    results = PostSerializer(many=True)
    next_cursor = serializers.CharField(allow_null=True, help_text="Null on the last page.")
