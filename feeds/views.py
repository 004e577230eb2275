from django.contrib.auth import get_user_model
from django.http import HttpResponse
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.exceptions import NotFound, PermissionDenied, ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.schema import BAD_INPUT, FORBIDDEN, NOT_FOUND, THROTTLED, TOO_LARGE, UNAUTHENTICATED, Detail
from core.throttling import FeedReadThrottle
from feeds.markers import MarkerConflict, feed_unread, marker_get, marker_set
from feeds.models import Marker
from feeds.pages import feed_page
from feeds.serializers import (
    FeedPageSerializer,
    FeedQuerySerializer,
    MarkerSerializer,
    MarkersMoveSerializer,
    MarkersSerializer,
    UnreadSerializer,
)

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
        _own_feed(request, user_id)
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


def _own_feed(request: Request, user_id: int) -> None:
    """A user reads their own feed; staff may read anyone's."""
    if request.user.pk != user_id and not request.user.is_staff:
        raise PermissionDenied("You can only read your own feed.")


def _marker_json(marker: Marker | None) -> dict | None:
    return MarkerSerializer(marker).data if marker is not None else None


class MarkersView(APIView):
    @extend_schema(
        responses={200: MarkersSerializer, **UNAUTHENTICATED},
        summary="Your read markers: where you stopped reading your home feed (null: nowhere yet).",
    )
    def get(self, request: Request) -> Response:
        return Response({"home": _marker_json(marker_get(user_id=request.user.pk))})

    @extend_schema(
        request=MarkersMoveSerializer,
        responses={
            200: MarkersSerializer,
            **BAD_INPUT,
            **UNAUTHENTICATED,
            409: OpenApiResponse(
                Detail, description="version is not the current one; the body carries the current marker."
            ),
            **TOO_LARGE,
        },
        summary="Move your home marker to a post; its version goes up by one.",
    )
    def post(self, request: Request) -> Response:
        body = MarkersMoveSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        home = body.validated_data["home"]
        try:
            marker = marker_set(
                user_id=request.user.pk, last_read_id=home["last_read_id"], version=home.get("version")
            )
        except MarkerConflict as exc:
            return Response(
                {
                    "detail": "The marker was moved meanwhile; read it again.",
                    "home": _marker_json(exc.args[0]),
                },
                status=status.HTTP_409_CONFLICT,
            )
        return Response({"home": _marker_json(marker)})


class UnreadView(APIView):
    throttle_classes = [FeedReadThrottle]

    @extend_schema(
        responses={200: UnreadSerializer, **UNAUTHENTICATED, **FORBIDDEN, **NOT_FOUND, **THROTTLED},
        summary="How many entries of a home feed are newer than its marker, counted up to 100.",
    )
    def get(self, request: Request, user_id: int) -> Response:
        _own_feed(request, user_id)
        if request.query_params:
            raise ValidationError(
                {name: ["Unknown query parameter."] for name in sorted(request.query_params)}
            )
        if request.user.pk != user_id and not User.objects.filter(pk=user_id).exists():
            raise NotFound("No user with this id.")
        unread = feed_unread(user_id=user_id)
        return Response({"count": unread.count, "capped": unread.capped})
