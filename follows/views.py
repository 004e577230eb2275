from django.db import IntegrityError
from rest_framework import status
from rest_framework.authtoken.serializers import AuthTokenSerializer
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from follows.serializers import FollowCreateSerializer, FollowSerializer, UserCreateSerializer
from follows.services import (
    FollowError,
    UnknownUser,
    follow_create,
    token_get_or_create,
    user_create,
)


class UserCreateView(APIView):
    authentication_classes: list = []
    permission_classes = [AllowAny]

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

    def post(self, request: Request) -> Response:
        serializer = AuthTokenSerializer(data=request.data, context={"request": request})
        serializer.is_valid(raise_exception=True)
        token = token_get_or_create(user=serializer.validated_data["user"])
        return Response({"token": token.key})


class FollowCreateView(APIView):
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
