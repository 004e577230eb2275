from django.contrib.auth import get_user_model
from django.http import HttpResponse
from drf_spectacular.utils import extend_schema
from rest_framework.exceptions import NotFound, PermissionDenied
from rest_framework.request import Request
from rest_framework.views import APIView

from core.schema import BAD_INPUT, FORBIDDEN, NOT_FOUND, THROTTLED, UNAUTHENTICATED
from core.throttling import FeedReadThrottle
from feeds.pages import feed_page
from feeds.serializers import FeedPageSerializer, FeedQuerySerializer

User = get_user_model()


class FeedView(APIView):
    throttle_classes = [FeedReadThrottle]

    @extend_schema(
        parameters=[FeedQuerySerializer],
        responses={
            200: FeedPageSerializer,
            **BAD_INPUT,
            **UNAUTHENTICATED,
            **FORBIDDEN,
            **NOT_FOUND,
            **THROTTLED,
        },
        summary="Read a home feed, newest first; pass next_cursor back as cursor for older posts.",
    )
    def get(self, request: Request, user_id: int) -> HttpResponse:
        if request.user.pk != user_id and not request.user.is_staff:
            raise PermissionDenied("You can only read your own feed.")
        query = FeedQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        try:
            body = feed_page(
                user_id=user_id,
                limit=query.validated_data["limit"],
                before_post_id=query.validated_data.get("cursor"),
            )
        except User.DoesNotExist:
            raise NotFound("No user with this id.") from None
        # Already rendered (and possibly straight from the cache): no serializer work here.
        return HttpResponse(body, content_type="application/json")
