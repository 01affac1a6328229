"""The staff roles as Django groups (definition: staff/roles.py).

Depends on the latest migration of every app whose permissions a role names or takes as a
rule, so each permission exists when the groups are filled."""

from django.db import migrations

from staff.roles import roles_forwards


class Migration(migrations.Migration):
    dependencies = [
        ("staff", "0001_initial"),
        ("admin", "0003_logentry_add_action_flag_choices"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
        ("sessions", "0001_initial"),
        ("django_q", "0019_alter_task_options_alter_ormq_key_alter_ormq_lock_and_more"),
        ("otp_totp", "0003_add_timestamps"),
        ("cases", "0007_encrypt_address_payload"),
        ("policies", "0005_workflow_retention_days"),
        ("channels", "0004_encrypt_inbound_body"),
        ("miniapp", "0004_link_last_opened"),
        ("writeback", "0002_core_rest_target_and_schedules"),
        ("metrics", "0003_daily_rollups"),
        ("agents", "0004_encrypt_offer_notes"),
        ("hooks", "0002_schedule"),
        ("privacy", "0003_retention_schedule"),
    ]

    # Backwards keeps the groups: removing them would strip people of their access.
    operations = [migrations.RunPython(roles_forwards, migrations.RunPython.noop)]
