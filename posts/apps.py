from django.apps import AppConfig


class PostsConfig(AppConfig):
    name = "posts"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.db.models.signals import post_delete, post_save

        from posts import receivers
        from posts.models import Post

        post_save.connect(
            receivers.announce_post_created, sender=Post, dispatch_uid="posts.announce_post_created"
        )
        post_delete.connect(
            receivers.announce_post_deleted, sender=Post, dispatch_uid="posts.announce_post_deleted"
        )
