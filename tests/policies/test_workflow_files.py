"""Workflows as files: `manage.py workflows export` writes what `workflows import` reads
back unchanged; a changed live workflow comes back as a new draft, never as a change to the
active version; a file with a broken rule writes nothing; shipped files install once."""

from __future__ import annotations

import io
import json

import pytest
import yaml
from django.core.management import CommandError, call_command

from policies.models import ExceptionRoute, ForkRule, Workflow, WorkflowAction
from policies.services import workflow_export, workflows_install_shipped
from tests import factories

pytestmark = pytest.mark.django_db

SHIPPED = ["address_update", "compliance_refresh", "failed_payment", "promise_to_pay"]


def _run(*args: str) -> str:
    out = io.StringIO()
    call_command("workflows", *args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def _rows() -> dict[str, list]:
    return {
        "workflows": list(Workflow.objects.values_list("key", "version", "status", "updated_at")),
        "actions": list(WorkflowAction.objects.order_by("pk").values()),
        "forks": list(ForkRule.objects.order_by("pk").values()),
        "routes": list(ExceptionRoute.objects.order_by("pk").values()),
    }


@pytest.fixture
def shipped():
    return {workflow.key: workflow for workflow in workflows_install_shipped()}


@pytest.mark.parametrize("key", SHIPPED)
def test_yaml_export_is_the_workflow(shipped, key):
    exported = yaml.safe_load(_run("export", key))

    file = factories.workflow_spec(key)
    assert exported == workflow_export(workflow=shipped[key])
    assert exported["contract"] == file["contract"]
    assert [
        (a["action"], a["eligible_when"], a.get("params", {})) for a in exported["actions"]
    ] == [(a["action"], a["eligible_when"], a.get("params", {})) for a in file["actions"]]
    assert exported["fork_rules"] == file["fork_rules"]
    assert set(exported["exception_routes"]) == set(file["exception_routes"])


@pytest.mark.parametrize("key", SHIPPED)
def test_changed_file_becomes_a_new_draft_not_a_change_to_the_active_one(shipped, tmp_path, key):
    active_before = workflow_export(workflow=shipped[key])
    spec = yaml.safe_load(_run("export", key))
    spec["name"] = f"{spec['name']} (reviewed)"
    spec["fork_rules"][0]["priority"] = 95
    path = tmp_path / f"{key}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")

    output = _run("import", str(path))

    assert output.splitlines() == [
        f"Imported {spec['name']} ({key} v2) as a draft.",
        "Ready to send for approval in the admin.",
    ]
    active = Workflow.objects.get(key=key, version=1)
    draft = Workflow.objects.get(key=key, version=2)
    assert (active.status, draft.status) == ("active", "draft")
    assert workflow_export(workflow=active) == active_before
    assert workflow_export(workflow=draft) == spec
    assert yaml.safe_load(_run("export", key, "--version", "2")) == spec
    # Export without a version still gives the active one.
    assert yaml.safe_load(_run("export", key)) == active_before


def test_importing_again_updates_the_open_draft(shipped, tmp_path):
    spec = workflow_export(workflow=shipped["failed_payment"])
    path = tmp_path / "failed_payment.yaml"
    for priority in (91, 92):
        spec["fork_rules"][0]["priority"] = priority
        path.write_text(yaml.safe_dump(spec), encoding="utf-8")
        _run("import", str(path))

    versions = list(Workflow.objects.filter(key="failed_payment").values_list("version", "status"))
    assert versions == [(2, "draft"), (1, "active")]
    assert Workflow.objects.get(key="failed_payment", version=2).fork_rules.first().priority == 92


def test_json_export_round_trips(shipped, tmp_path):
    path = tmp_path / "promise_to_pay.json"

    _run("export", "promise_to_pay", "--format", "json", "--output", str(path))
    spec = json.loads(path.read_text(encoding="utf-8"))
    assert spec == workflow_export(workflow=shipped["promise_to_pay"])
    spec["exception_routes"]["no_response"]["priority"] = 35
    path.write_text(json.dumps(spec), encoding="utf-8")
    _run("import", str(path))

    draft = Workflow.objects.get(key="promise_to_pay", version=2)
    assert workflow_export(workflow=draft) == spec
    assert draft.exception_routes.get(exception_type="no_response").priority == 35


def test_import_of_a_new_workflow_lists_what_is_missing_before_launch(db, tmp_path):
    spec = factories.workflow_spec("address_update")
    spec["writeback_target"] = ""
    del spec["exception_routes"]["no_response"]
    path = tmp_path / "address_update.yaml"
    path.write_text(yaml.safe_dump(spec), encoding="utf-8")

    output = _run("import", str(path))

    assert output.splitlines() == [
        "Imported Address update (address_update v1) as a draft.",
        "Before it can be activated:",
        "  - Attach a writeback target (where outcomes are posted).",
        "  - Choose an exception route for “No response”.",
    ]
    assert Workflow.objects.get(key="address_update").status == "draft"


@pytest.mark.parametrize("installed", [False, True])
def test_file_with_a_broken_rule_is_refused_and_writes_nothing(db, tmp_path, installed):
    if installed:
        workflows_install_shipped()
    spec = factories.workflow_spec("failed_payment")
    spec["actions"][1]["eligible_when"] = "data.amount <= 2000.0 &&"
    spec["fork_rules"][1]["when"] = '"insolvency" in customer.flag'
    path = tmp_path / "failed_payment.yaml"
    path.write_text(yaml.safe_dump(spec), encoding="utf-8")
    before = _rows()

    with pytest.raises(CommandError) as caught:
        _run("import", str(path))

    lines = str(caught.value).splitlines()
    assert lines[0] == "failed_payment.yaml was not imported:"
    assert lines[1].startswith(
        "  - actions[1]: Pay now: eligible when: syntax error in `data.amount <= 2000.0 &&`:"
    )
    assert lines[2] == (
        '  - fork_rules[1].when: Insolvency open: `"insolvency" in customer.flag` uses '
        "customer.flag, which this workflow does not have; customer has: consent, flags, "
        "has_email, has_phone, has_whatsapp, locale, preferred_channel, timezone."
    )
    assert len(lines) == 3
    assert _rows() == before


def test_file_that_is_not_a_workflow(db, tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("key: [unclosed\n", encoding="utf-8")

    with pytest.raises(
        CommandError, match=r"broken\.yaml was not imported:\n  - broken\.yaml: not valid YAML"
    ):
        _run("import", str(path))
    with pytest.raises(CommandError, match="No such file"):
        _run("import", str(tmp_path / "missing.yaml"))
    with pytest.raises(CommandError, match=r"No workflow 'nope'\.$"):
        _run("export", "nope")
    assert not Workflow.objects.exists()


def test_installing_the_shipped_files_twice_changes_nothing(shipped):
    before = _rows()

    again = workflows_install_shipped()

    assert [workflow.pk for workflow in again] == [shipped[key].pk for key in SHIPPED]
    assert _rows() == before
    assert _run("list").splitlines() == [f"{key:<24} v1    active" for key in SHIPPED]


def test_installing_a_changed_shipped_file_makes_the_next_version_live(shipped):
    spec = factories.workflow_spec("failed_payment")
    spec["actions"][1]["eligible_when"] = "data.amount <= 2500.0"

    factories.workflow_variant("failed_payment", actions=spec["actions"])

    assert list(Workflow.objects.filter(key="failed_payment").values_list("version", "status")) == [
        (2, "active"),
        (1, "retired"),
    ]
    assert len(workflows_install_shipped()) == 4  # and the file as shipped is v3
    assert Workflow.objects.get(key="failed_payment", status="active").version == 3
