from django.apps import AppConfig


class FeedsConfig(AppConfig):
    name = "feeds"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.db.models.signals import post_delete

        from feeds import receivers
        from follows.signals import feeds_hidden, reader_returned
        from posts.models import Post

        post_delete.connect(
            receivers.author_page_forget_deleted_post,
            sender=Post,
            dispatch_uid="feeds.author_page_forget_deleted_post",
        )
        reader_returned.connect(
            receivers.returning_reader_pages_forget, dispatch_uid="feeds.returning_reader_pages_forget"
        )
        feeds_hidden.connect(receivers.hidden_pages_forget, dispatch_uid="feeds.hidden_pages_forget")
