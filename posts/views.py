from rest_framework import status
from rest_framework.exceptions import NotFound
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from posts.models import Post
from posts.selectors import post_get
from posts.serializers import PostCreateSerializer, post_json
from posts.services import post_create


class PostCreateView(APIView):
    def post(self, request: Request) -> Response:
        serializer = PostCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        post = post_create(author=request.user, content=serializer.validated_data["content"])
        return Response(
            post_json(post, author_username=request.user.get_username()),
            status=status.HTTP_201_CREATED,
        )


class PostDetailView(APIView):
    def get(self, request: Request, post_id: int) -> Response:
        try:
            post = post_get(post_id=post_id)
        except Post.DoesNotExist:
            raise NotFound("No post with this id.") from None
        return Response(post_json(post))
