from django.apps import AppConfig


class WritebackConfig(AppConfig):
    name = "writeback"
