from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.exceptions import NotFound, PermissionDenied
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.schema import (
    BAD_INPUT,
    DATABASE_UNAVAILABLE,
    FORBIDDEN,
    NOT_FOUND,
    THROTTLED,
    TOO_LARGE,
    UNAUTHENTICATED,
    Detail,
)
from core.throttling import PostCreateThrottle
from follows.selectors import blocked_between
from posts.models import Post
from posts.selectors import post_get
from posts.serializers import (
    IDEMPOTENCY_KEY_MAX_LENGTH,
    PostCreateSerializer,
    PostSerializer,
    idempotency_key_parse,
    post_json,
)
from posts.services import (
    NotAuthor,
    PostRequestInProgress,
    PostRequestMismatch,
    post_create,
    post_create_once,
    post_delete,
)

IDEMPOTENCY_KEY = OpenApiParameter(
    "Idempotency-Key",
    str,
    OpenApiParameter.HEADER,
    description=(
        'Makes retries safe (IETF draft "The Idempotency-Key HTTP Header Field"): a retry with '
        "the same key and body within POST_IDEMPOTENCY_SECONDS (24 h) returns the first response "
        "again and stores nothing (header Idempotent-Replayed: true). A quoted string "
        f'("8e03978e-40d5-43e8-bc93-6894a57f9324") or a bare token, at most '
        f"{IDEMPOTENCY_KEY_MAX_LENGTH} characters; keys are per user."
    ),
)


class PostCreateView(APIView):
    throttle_classes = [PostCreateThrottle]

    @extend_schema(
        request=PostCreateSerializer,
        parameters=[IDEMPOTENCY_KEY],
        responses={
            201: PostSerializer,
            **BAD_INPUT,
            **UNAUTHENTICATED,
            409: OpenApiResponse(
                Detail, description="A request with this key is still running; see Retry-After."
            ),
            **TOO_LARGE,
            422: OpenApiResponse(Detail, description="This key was used with another body."),
            **THROTTLED,
            **DATABASE_UNAVAILABLE,
        },
        summary="Create a post; it reaches followers' feeds through the fan-out worker.",
    )
    def post(self, request: Request) -> Response:
        key = idempotency_key_parse(request.headers.get("Idempotency-Key"))
        serializer = PostCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        content = serializer.validated_data["content"]
        if key is None:
            post = post_create(author=request.user, content=content)
            return Response(post_json(post, author_username=request.user.get_username()), status=201)
        try:
            created = post_create_once(author=request.user, content=content, key=key)
        except PostRequestInProgress:
            return Response(
                {"detail": "A request with this Idempotency-Key is still running; retry shortly."},
                status=status.HTTP_409_CONFLICT,
                headers={"Retry-After": "1"},
            )
        except PostRequestMismatch:
            return Response(
                {"detail": "This Idempotency-Key was already used with another body."},
                status=status.HTTP_422_UNPROCESSABLE_ENTITY,
            )
        headers = {"Idempotent-Replayed": "true"} if created.replayed else {}
        return Response(created.body, status=created.status, headers=headers)


class PostDetailView(APIView):
    @extend_schema(
        responses={200: PostSerializer, **UNAUTHENTICATED, **NOT_FOUND},
        summary="Read a post; a 404 as well when its author and you are separated by a block.",
    )
    def get(self, request: Request, post_id: int) -> Response:
        try:
            post = post_get(post_id=post_id)
        except Post.DoesNotExist:
            raise NotFound("No post with this id.") from None
        if blocked_between(request.user.pk, post.author_id):
            # As for no post: a block is not announced to the one it shuts out.
            raise NotFound("No post with this id.")
        return Response(post_json(post))

    @extend_schema(
        responses={204: OpenApiResponse(description="Deleted."), **UNAUTHENTICATED, **FORBIDDEN, **NOT_FOUND},
        summary="Delete your post; it leaves every feed.",
    )
    def delete(self, request: Request, post_id: int) -> Response:
        try:
            post_delete(post_id=post_id, actor=request.user)
        except Post.DoesNotExist:
            raise NotFound("No post with this id.") from None
        except NotAuthor:
            raise PermissionDenied("Only the author can delete a post.") from None
        return Response(status=status.HTTP_204_NO_CONTENT)
