from django.apps import AppConfig


class FollowsConfig(AppConfig):
    name = "follows"
    verbose_name = "Accounts and follows"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.contrib.auth import get_user_model
        from django.db.models.signals import post_delete, post_save
        from rest_framework.authtoken.models import Token

        from follows import receivers
        from follows.models import Block, Follow, Mute

        post_delete.connect(
            receivers.forget_cached_token, sender=Token, dispatch_uid="follows.forget_cached_token"
        )
        post_save.connect(
            receivers.forget_cached_tokens_of_user,
            sender=get_user_model(),
            dispatch_uid="follows.forget_cached_tokens_of_user",
        )
        post_save.connect(
            receivers.revoke_tokens_on_password_change,
            sender=get_user_model(),
            dispatch_uid="follows.revoke_tokens_on_password_change",
        )
        post_save.connect(
            receivers.announce_follow_created, sender=Follow, dispatch_uid="follows.announce_follow_created"
        )
        post_delete.connect(
            receivers.announce_follow_deleted, sender=Follow, dispatch_uid="follows.announce_follow_deleted"
        )
        for model in (Block, Mute):
            name = model.__name__.lower()
            post_save.connect(
                receivers.announce_relation_created,
                sender=model,
                dispatch_uid=f"follows.announce_{name}_created",
            )
            post_delete.connect(
                receivers.announce_relation_deleted,
                sender=model,
                dispatch_uid=f"follows.announce_{name}_deleted",
            )
