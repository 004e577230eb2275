from django.apps import AppConfig


class EventbusConfig(AppConfig):
    """Events, their schema, the transactional outbox and its relay, the producer and topics.

    A leaf: the apps that announce changes use it, and it uses none of them.
    """

    name = "eventbus"
    verbose_name = "Event outbox"
    default_auto_field = "django.db.models.BigAutoField"
