from posts.models import Post


def post_get(*, post_id: int) -> Post:
    """The post with its author loaded; raises Post.DoesNotExist."""
    return Post.objects.select_related("author").get(pk=post_id)


def post_page_by_author(
    *, author_id: int, limit: int, before_post_id: int | None = None
) -> tuple[list[Post], bool]:
    """Up to ``limit`` posts of one author, newest first, older than ``before_post_id``
    (one scan of post_author_newest), and whether older ones follow."""
    posts = Post.objects.filter(author_id=author_id).select_related("author").order_by("-pk")
    if before_post_id is not None:
        posts = posts.filter(pk__lt=before_post_id)
    page = list(posts[: limit + 1])
    return page[:limit], len(page) > limit
