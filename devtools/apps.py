from django.apps import AppConfig


class DevtoolsConfig(AppConfig):
    """Development tooling: the dev broker, demo data, process helpers. No models, and no
    production code imports it."""

    name = "devtools"
