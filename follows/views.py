from collections.abc import Callable

from django.db import IntegrityError
from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.authtoken.serializers import AuthTokenSerializer
from rest_framework.exceptions import NotFound, PermissionDenied, Throttled, ValidationError
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.cursor import cursor_encode
from core.paging import PageQuerySerializer
from core.schema import (
    BAD_INPUT,
    FORBIDDEN,
    NOT_FOUND,
    THROTTLED,
    TOO_LARGE,
    UNAUTHENTICATED,
    UNAVAILABLE,
)
from core.throttling import (
    AccountLoginLimit,
    BlockCreateThrottle,
    FollowCreateThrottle,
    MuteCreateThrottle,
    SignupThrottle,
    TokenThrottle,
)
from follows.models import Block, Follow, Mute, Relation
from follows.selectors import relations_page
from follows.serializers import (
    FollowCreateSerializer,
    FollowSerializer,
    RelationCreateSerializer,
    RelationPageSerializer,
    RelationSerializer,
    UserCreateSerializer,
)
from follows.services import (
    FollowBlocked,
    FollowError,
    RelationError,
    UnknownUser,
    block_create,
    block_delete,
    follow_create,
    follow_delete,
    mute_create,
    mute_delete,
    token_get_or_create,
    token_revoke,
    user_create,
)

TokenResponse = inline_serializer("Token", {"token": serializers.CharField()})
UserCreated = inline_serializer(
    "UserCreated",
    {"id": serializers.IntegerField(), "username": serializers.CharField(), "token": serializers.CharField()},
)


class UserCreateView(APIView):
    authentication_classes: list = []
    permission_classes = [AllowAny]
    throttle_classes = [SignupThrottle]

    @extend_schema(
        request=UserCreateSerializer,
        responses={201: UserCreated, **BAD_INPUT, **TOO_LARGE, **THROTTLED},
        summary="Create an account; the response carries its API token.",
        auth=[],
    )
    def post(self, request: Request) -> Response:
        serializer = UserCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            user, token = user_create(**serializer.validated_data)
        except IntegrityError:
            raise ValidationError({"username": ["A user with that username already exists."]}) from None
        return Response(
            {"id": user.pk, "username": user.get_username(), "token": token.key},
            status=status.HTTP_201_CREATED,
        )


class TokenObtainView(APIView):
    """POST exchanges a password for the account's token; DELETE revokes the token that
    authenticated the request."""

    def initialize_request(self, request, *args, **kwargs) -> Request:
        # Which authenticators apply depends on the method, before DRF builds the request.
        self._revoking = request.method == "DELETE"
        return super().initialize_request(request, *args, **kwargs)

    def get_authenticators(self) -> list:
        return super().get_authenticators() if self._revoking else []

    def get_permissions(self) -> list:
        return super().get_permissions() if self._revoking else [AllowAny()]

    def get_throttles(self) -> list:
        return [] if self._revoking else [TokenThrottle()]

    @extend_schema(
        request=AuthTokenSerializer,
        responses={200: TokenResponse, **BAD_INPUT, **TOO_LARGE, **THROTTLED, **UNAVAILABLE},
        summary="Exchange a username and password for the account's API token.",
        auth=[],
    )
    def post(self, request: Request) -> Response:
        # Per account, after the per-address throttle; a right password gives it back.
        account = AccountLoginLimit.of(request.data)
        if (wait := account.check()) is not None:
            raise Throttled(wait)
        serializer = AuthTokenSerializer(data=request.data, context={"request": request})
        serializer.is_valid(raise_exception=True)
        account.succeeded()
        token = token_get_or_create(user=serializer.validated_data["user"])
        return Response({"token": token.key})

    @extend_schema(
        request=None,
        responses={204: OpenApiResponse(description="Revoked."), **UNAUTHENTICATED},
        summary="Revoke the token of this request; POST /auth/token gives the account a new one.",
    )
    def delete(self, request: Request) -> Response:
        token_revoke(key=request.auth)
        return Response(status=status.HTTP_204_NO_CONTENT)


class FollowCreateView(APIView):
    throttle_classes = [FollowCreateThrottle]

    @extend_schema(
        request=FollowCreateSerializer,
        responses={
            200: OpenApiResponse(FollowSerializer, description="Already following."),
            201: OpenApiResponse(FollowSerializer, description="Now following."),
            **BAD_INPUT,
            **UNAUTHENTICATED,
            **FORBIDDEN,
            **NOT_FOUND,
            **TOO_LARGE,
            **THROTTLED,
        },
        summary="Follow a user; their newest posts are copied into your feed.",
    )
    def post(self, request: Request) -> Response:
        serializer = FollowCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            follow, created = follow_create(
                follower=request.user, followee_id=serializer.validated_data["followee_id"]
            )
        except FollowBlocked as exc:
            raise PermissionDenied(str(exc)) from None
        except FollowError as exc:
            raise ValidationError({"followee_id": [str(exc)]}) from None
        except UnknownUser:
            raise NotFound("No user with this id.") from None
        return Response(
            FollowSerializer(follow).data,
            status=status.HTTP_201_CREATED if created else status.HTTP_200_OK,
        )


class FollowDeleteView(APIView):
    @extend_schema(
        responses={204: OpenApiResponse(description="Unfollowed."), **UNAUTHENTICATED, **NOT_FOUND},
        summary="Unfollow a user; their posts leave your feed.",
    )
    def delete(self, request: Request, followee_id: int) -> Response:
        try:
            follow_delete(follower=request.user, followee_id=followee_id)
        except Follow.DoesNotExist:
            raise NotFound("You do not follow this user.") from None
        return Response(status=status.HTTP_204_NO_CONTENT)


class _RelationsView(APIView):
    """GET lists the accounts the user blocks (or mutes), newest first; POST adds one.
    Only adding one is rate-limited, as for follows."""

    model: type[Relation]

    def get_throttles(self) -> list:
        return super().get_throttles() if self.request.method == "POST" else []

    def _list(self, request: Request) -> Response:
        query = PageQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        relations, more = relations_page(
            self.model,
            user_id=request.user.pk,
            limit=query.validated_data["limit"],
            before_id=query.validated_data.get("cursor"),
        )
        return Response(
            {
                "results": RelationSerializer(relations, many=True).data,
                "next_cursor": cursor_encode(relations[-1].pk) if more else None,
            }
        )

    def _create(self, request: Request, create: Callable[..., tuple[Relation, bool]]) -> Response:
        serializer = RelationCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            relation, created = create(user=request.user, target_id=serializer.validated_data["user_id"])
        except RelationError as exc:
            raise ValidationError({"user_id": [str(exc)]}) from None
        except UnknownUser:
            raise NotFound("No user with this id.") from None
        return Response(
            RelationSerializer(relation).data,
            status=status.HTTP_201_CREATED if created else status.HTTP_200_OK,
        )


def _listed(noun: str):
    return extend_schema(
        parameters=[PageQuerySerializer],
        responses={200: RelationPageSerializer, **BAD_INPUT, **UNAUTHENTICATED},
        summary=f"The accounts you {noun}, newest first; pass next_cursor back as cursor for older ones.",
    )


def _created(noun: str, done: str, effect: str):
    return extend_schema(
        request=RelationCreateSerializer,
        responses={
            200: OpenApiResponse(RelationSerializer, description=f"Already {done}."),
            201: OpenApiResponse(RelationSerializer, description=f"Now {done}."),
            **BAD_INPUT,
            **UNAUTHENTICATED,
            **NOT_FOUND,
            **TOO_LARGE,
            **THROTTLED,
        },
        summary=f"{noun.capitalize()} a user: {effect}",
    )


class BlockListCreateView(_RelationsView):
    model = Block
    throttle_classes = [BlockCreateThrottle]

    @_listed("block")
    def get(self, request: Request) -> Response:
        return self._list(request)

    @_created("block", "blocked", "the follows between you end, and neither sees the other's posts.")
    def post(self, request: Request) -> Response:
        return self._create(request, block_create)


class MuteListCreateView(_RelationsView):
    model = Mute
    throttle_classes = [MuteCreateThrottle]

    @_listed("mute")
    def get(self, request: Request) -> Response:
        return self._list(request)

    @_created(
        "mute", "muted", "their posts leave your home feed; you still follow them, and they are not told."
    )
    def post(self, request: Request) -> Response:
        return self._create(request, mute_create)


class BlockDeleteView(APIView):
    @extend_schema(
        responses={204: OpenApiResponse(description="Unblocked."), **UNAUTHENTICATED, **NOT_FOUND},
        summary="Unblock a user; the follows the block ended stay ended.",
    )
    def delete(self, request: Request, user_id: int) -> Response:
        try:
            block_delete(user=request.user, target_id=user_id)
        except Block.DoesNotExist:
            raise NotFound("You do not block this user.") from None
        return Response(status=status.HTTP_204_NO_CONTENT)


class MuteDeleteView(APIView):
    @extend_schema(
        responses={204: OpenApiResponse(description="Unmuted."), **UNAUTHENTICATED, **NOT_FOUND},
        summary="Unmute a user; all their posts are back in your home feed.",
    )
    def delete(self, request: Request, user_id: int) -> Response:
        try:
            mute_delete(user=request.user, target_id=user_id)
        except Mute.DoesNotExist:
            raise NotFound("You do not mute this user.") from None
        return Response(status=status.HTTP_204_NO_CONTENT)
