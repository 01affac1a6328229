from django.apps import AppConfig
from django.core import checks


class PrivacyConfig(AppConfig):
    name = "privacy"
    verbose_name = "Data protection"

    def ready(self) -> None:
        from privacy.checks import encryption_keys_check, encryption_keys_deploy_check

        checks.register(encryption_keys_check, checks.Tags.security)
        checks.register(encryption_keys_deploy_check, checks.Tags.security, deploy=True)
