from posts.models import Post


def post_get(*, post_id: int) -> Post:
    """The post with its author loaded; raises Post.DoesNotExist."""
    return Post.objects.select_related("author").get(pk=post_id)
