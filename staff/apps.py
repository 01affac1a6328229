from django.apps import AppConfig
from django.core import checks


class StaffConfig(AppConfig):
    name = "staff"
    verbose_name = "Staff"

    def ready(self) -> None:
        from staff.oidc import oidc_settings_check
        from staff.signals import signals_connect
        from staff.tracking import tracking_connect

        signals_connect()
        tracking_connect()
        checks.register(oidc_settings_check, checks.Tags.compatibility)
