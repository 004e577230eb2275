from django.conf import settings
from django.db import models


class FeedEntry(models.Model):
    """One post in one user's precomputed feed.

    The composite primary key (user_id, post_id) is the only index a feed read needs: a
    backward scan of it yields a user's feed newest first, because post ids grow with
    creation order. It also makes a repeated fan-out a no-op under ``ignore_conflicts``.
    """

    pk = models.CompositePrimaryKey("user_id", "post_id")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+", db_index=False
    )
    # Indexed so that deleting a post removes its entries without scanning every feed.
    post = models.ForeignKey("posts.Post", on_delete=models.CASCADE, related_name="+")

    class Meta:
        verbose_name_plural = "feed entries"

    def __str__(self) -> str:
        return f"post {self.post_id} in the feed of {self.user_id}"
