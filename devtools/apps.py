from django.apps import AppConfig


class DevtoolsConfig(AppConfig):
    """Development tooling: the dev broker, the stack launcher, the seeder behind the demo
    data, the benchmark and the chaos drill, process helpers. No models, and no production
    code imports it."""

    name = "devtools"
