from django.db import IntegrityError
from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.authtoken.serializers import AuthTokenSerializer
from rest_framework.exceptions import NotFound, Throttled, ValidationError
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.schema import BAD_INPUT, NOT_FOUND, THROTTLED, TOO_LARGE, UNAUTHENTICATED, UNAVAILABLE
from core.throttling import AccountLoginLimit, FollowCreateThrottle, SignupThrottle, TokenThrottle
from follows.models import Follow
from follows.serializers import FollowCreateSerializer, FollowSerializer, UserCreateSerializer
from follows.services import (
    FollowError,
    UnknownUser,
    follow_create,
    follow_delete,
    token_get_or_create,
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
    authentication_classes: list = []
    permission_classes = [AllowAny]
    throttle_classes = [TokenThrottle]

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


class FollowCreateView(APIView):
    throttle_classes = [FollowCreateThrottle]

    @extend_schema(
        request=FollowCreateSerializer,
        responses={
            200: OpenApiResponse(FollowSerializer, description="Already following."),
            201: OpenApiResponse(FollowSerializer, description="Now following."),
            **BAD_INPUT,
            **UNAUTHENTICATED,
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
