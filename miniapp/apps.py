from django.apps import AppConfig


class MiniappConfig(AppConfig):
    name = "miniapp"
