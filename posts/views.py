from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.exceptions import NotFound, PermissionDenied
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.schema import BAD_INPUT, FORBIDDEN, NOT_FOUND, THROTTLED, TOO_LARGE, UNAUTHENTICATED
from core.throttling import PostCreateThrottle
from posts.models import Post
from posts.selectors import post_get
from posts.serializers import PostCreateSerializer, PostSerializer, post_json
from posts.services import NotAuthor, post_create, post_delete


class PostCreateView(APIView):
    throttle_classes = [PostCreateThrottle]

    @extend_schema(
        request=PostCreateSerializer,
        responses={201: PostSerializer, **BAD_INPUT, **UNAUTHENTICATED, **TOO_LARGE, **THROTTLED},
        summary="Create a post; it reaches followers' feeds through the fan-out worker.",
    )
    def post(self, request: Request) -> Response:
        serializer = PostCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        post = post_create(author=request.user, content=serializer.validated_data["content"])
        return Response(
            post_json(post, author_username=request.user.get_username()),
            status=status.HTTP_201_CREATED,
        )


class PostDetailView(APIView):
    @extend_schema(responses={200: PostSerializer, **UNAUTHENTICATED, **NOT_FOUND}, summary="Read a post.")
    def get(self, request: Request, post_id: int) -> Response:
        try:
            post = post_get(post_id=post_id)
        except Post.DoesNotExist:
            raise NotFound("No post with this id.") from None
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
