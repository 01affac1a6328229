from django.apps import AppConfig
from django.core import checks


class AgentsConfig(AppConfig):
    name = "agents"
    verbose_name = "Agents"

    def ready(self) -> None:
        checks.register(sla_setting_check, checks.Tags.compatibility)


def sla_setting_check(app_configs, **kwargs) -> list[checks.CheckMessage]:
    """A malformed AGENT_SLA_HOURS stops startup (`check` runs before every server start)
    instead of failing the first escalation."""
    from django.conf import settings
    from django.core.exceptions import ImproperlyConfigured

    from agents.sla import sla_rules

    try:
        sla_rules(settings.AGENT_SLA_HOURS)
    except ImproperlyConfigured as exc:
        return [checks.Error(str(exc), id="agents.E001")]
    return []
