from django.apps import AppConfig


class ObservabilityConfig(AppConfig):
    """`config` as an app only to connect the job signals that carry request ids to the
    workers (config/observability.py); it has no models."""

    name = "config"
    label = "observability"
    verbose_name = "Observability"

    def ready(self) -> None:
        from django_q.signals import post_execute_in_worker, pre_enqueue, pre_execute

        from config.observability import (
            job_adopt_request_id,
            job_carry_request_id,
            job_forget_request_id,
        )

        pre_enqueue.connect(job_carry_request_id, dispatch_uid="request_id_carry")
        pre_execute.connect(job_adopt_request_id, dispatch_uid="request_id_adopt")
        post_execute_in_worker.connect(job_forget_request_id, dispatch_uid="request_id_forget")
