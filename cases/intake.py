"""File intake: trigger files (CSV or JSON Lines) from source systems that cannot call the API.

A file takes exactly the batch API's path. Each row becomes the nested trigger body a source
system would POST, and chunks of 1,000 go to `triggers_ingest`, so validation, idempotency
(per API client and event_id) and the bulk writes are the API's own; re-importing a file
is harmless. Only what a file needs is added here: a mapping from its columns to trigger
fields, typing of CSV text by the workflow's contract, a per-row error report, and the drop
folder a scheduled job watches (cases/jobs.py). docs/intake.md is the user's guide.
"""

from __future__ import annotations

import csv
import datetime as dt
import difflib
import json
import logging
import os
import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, TextIO

import yaml
from django.db import IntegrityError, transaction

from cases.known_facts import KNOWN_FACT_KINDS
from cases.models import ApiClient
from cases.services import TriggerResult, api_client_create, triggers_ingest
from cases.triggers import (
    ADDRESS_FIELDS,
    CHANNELS,
    CONSENT_FIELDS,
    CUSTOMER_FIELDS,
    trigger_parse,
)
from policies.models import Workflow

logger = logging.getLogger(__name__)

INTAKE_CLIENT_NAME = "file-intake"
# The batch API's limit: one chunk is one `triggers_ingest` call, as one batch request is.
CHUNK_ROWS = 1000
CSV_SUFFIXES = (".csv",)
JSONL_SUFFIXES = (".jsonl", ".ndjson")
INPUT_SUFFIXES = CSV_SUFFIXES + JSONL_SUFFIXES
MAPPING_SUFFIXES = (".yaml", ".yml", ".json")
MAPPING_KEYS = ("columns", "constants")
COLUMN_SPEC_KEYS = ("column", "date_format")
REPORT_SUFFIX = ".errors.csv"
REPORT_FIELDS = ("row", "event_id", "status", "field", "column", "message")
LIST_SEPARATOR = ";"
TRUE_WORDS = frozenset({"true", "yes", "1"})
FALSE_WORDS = frozenset({"false", "no", "0"})
WHOLE_NUMBER = re.compile(r"^[+-]?\d+$")
# A day above 12 so an example date shows which part is the day and which the month.
SAMPLE_DAY = dt.date(2026, 11, 23)
STATUSES = ("created", "existing", "invalid", "conflict")
CONSTANT = "(constant)"

# How a target's text is typed. Decimals stay text: the contract parses them exactly.
TEXT, INTEGER, BOOLEAN, LIST, DATE, CHOICE = "text", "integer", "boolean", "list", "date", "choice"
CONTRACT_KINDS = {
    "integer": INTEGER,
    "boolean": BOOLEAN,
    "list": LIST,
    "date": DATE,
    "choice": CHOICE,
}


class IntakeFileError(Exception):
    """The file, its mapping, its workflow or its client cannot be used; nothing was imported.
    `problems` lists every reason found, each one a sentence for the person fixing it."""

    def __init__(self, problems: Sequence[str]):
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


class CellInvalid(ValueError):
    pass


# --- targets: the trigger fields a column can fill ------------------------------------------


@dataclass(frozen=True)
class Target:
    path: str
    kind: str
    required: bool = False
    choices: tuple[Any, ...] = ()


def intake_targets(*, workflow: Workflow) -> dict[str, Target]:
    """Every dotted path a column may fill, typed. Built from the trigger envelope's own field
    lists and the workflow's contract, so intake accepts exactly what the API accepts."""
    targets = [Target("event_id", TEXT, required=True), Target("segment", TEXT)]
    for name in CUSTOMER_FIELDS:
        if name == "address":
            targets.append(Target("customer.address", TEXT))
            targets += [
                Target(f"customer.address.{part}", LIST if part == "lines" else TEXT)
                for part in ADDRESS_FIELDS
            ]
        elif name == "consent":
            for channel in CHANNELS:
                targets.append(Target(f"customer.consent.{channel}", BOOLEAN))
                targets += [
                    Target(
                        f"customer.consent.{channel}.{part}", BOOLEAN if part == "value" else TEXT
                    )
                    for part in CONSENT_FIELDS
                ]
        elif name == "known_facts":
            targets += [
                Target(f"customer.known_facts.{kind}", DATE if kind == "date_of_birth" else TEXT)
                for kind in KNOWN_FACT_KINDS
            ]
        else:
            kind = LIST if name == "flags" else TEXT
            targets.append(Target(f"customer.{name}", kind, required=name == "external_id"))
    for spec in workflow.contract:
        targets.append(
            Target(
                f"data.{spec['name']}",
                CONTRACT_KINDS.get(spec["type"], TEXT),
                required=spec.get("required", True),
                choices=tuple(spec.get("choices") or ()) if spec["type"] == "choice" else (),
            )
        )
    return {target.path: target for target in targets}


def _unknown_target(path: str, targets: dict[str, Target], workflow_key: str) -> str:
    if path == "workflow":
        return "the workflow is given by --workflow (or the drop folder's name), not by the file."
    hint = difflib.get_close_matches(path, targets, n=1)
    did_you_mean = f" Did you mean {hint[0]}?" if hint else ""
    if path.startswith("data."):
        fields = ", ".join(t for t in targets if t.startswith("data."))
        return f"workflow {workflow_key} has no such data field; it has: {fields}.{did_you_mean}"
    return (
        "not a trigger field; use event_id, segment, customer.<field> or data.<field> "
        f"(docs/intake.md lists them).{did_you_mean}"
    )


def _unknown_columns(
    names: Sequence[str], targets: dict[str, Target], workflow_key: str, *, noun: str = "column"
) -> str:
    """One problem for all the columns (or JSON keys) that name no field, without a mapping."""
    data_fields = ", ".join(t for t in targets if t.startswith("data."))
    message = (
        f"{noun.capitalize()}(s) {', '.join(names)}: not trigger fields. Without a mapping "
        f"file, name each {noun} by its trigger field path: event_id, segment, customer.<field> "
        f"(docs/intake.md lists them) or one of workflow {workflow_key}'s data fields: "
        f"{data_fields}."
    )
    hints = [
        f"{name} → {match[0]}"
        for name in names
        if (match := difflib.get_close_matches(name, targets, n=1))
    ]
    if hints:
        message += f" Did you mean: {', '.join(hints)}?"
    if "workflow" in names:
        message += " The workflow is given by --workflow (or the drop folder's name)."
    return message


# --- typing one value -----------------------------------------------------------------------


def _date_format_problem(date_format: Any) -> str:
    """Why a strptime format cannot read whole dates, or "" if it can."""
    if not isinstance(date_format, str) or not date_format.strip():
        return "must be a strptime format, e.g. %d/%m/%Y."
    try:
        round_trip = dt.datetime.strptime(SAMPLE_DAY.strftime(date_format), date_format).date()
    except ValueError as exc:
        return f"{date_format!r} is not a usable date format ({exc})."
    if round_trip != SAMPLE_DAY:
        return (
            f"{date_format!r} does not read a whole date (day, month and year); write it with "
            "strptime codes, e.g. %d/%m/%Y for 23/11/2026."
        )
    return ""


@dataclass(frozen=True)
class Rule:
    """Where one column (or constant) goes in the trigger body, and how its text is typed."""

    target: Target
    assign: tuple[str, ...]
    column: str = ""
    date_format: str = ""
    constant: Any = None


def _text_value(text: str, rule: Rule) -> Any:
    """Type one CSV cell (already known to be non-empty) for its target."""
    kind = rule.target.kind
    cell = text.strip()
    if rule.date_format:
        try:
            return dt.datetime.strptime(cell, rule.date_format).date().isoformat()
        except ValueError as exc:
            example = SAMPLE_DAY.strftime(rule.date_format)
            raise CellInvalid(
                f"Must be a date in the format {rule.date_format}, e.g. {example}."
            ) from exc
    if kind == INTEGER:
        if not WHOLE_NUMBER.match(cell):
            raise CellInvalid("Must be a whole number, e.g. 22.")
        return int(cell)
    if kind == BOOLEAN:
        if cell.lower() in TRUE_WORDS:
            return True
        if cell.lower() in FALSE_WORDS:
            return False
        raise CellInvalid("Must be true or false (also accepted: yes/no, 1/0).")
    if kind == LIST:
        return [item.strip() for item in cell.split(LIST_SEPARATOR) if item.strip()]
    if kind == CHOICE:
        # Choices may be numbers in the contract; a CSV cell is always text.
        return next((choice for choice in rule.target.choices if str(choice) == cell), cell)
    return cell


def _cell_value(value: Any, rule: Rule, *, typed: bool) -> Any:
    """A CSV cell is typed by its target; a JSON value already has its type, and only a
    date in a mapped date_format is rewritten to ISO."""
    if typed and not (isinstance(value, str) and rule.date_format):
        return value
    if not isinstance(value, str):
        return value
    return _text_value(value, rule)


def _is_empty(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


# --- the plan: how a file's rows become trigger bodies --------------------------------------


@dataclass(frozen=True)
class IntakePlan:
    workflow_key: str
    rules: tuple[Rule, ...]
    constants: tuple[Rule, ...]

    @cached_property
    def columns_by_target(self) -> dict[str, str]:
        return {
            **{rule.target.path: rule.column for rule in self.rules},
            **{rule.target.path: CONSTANT for rule in self.constants},
        }

    def column_for(self, field_path: str) -> str:
        """The source column behind an error's field path (customer.consent.sms.value comes
        from the column mapped to customer.consent.sms), for the report."""
        path = field_path
        while path:
            if path in self.columns_by_target:
                return self.columns_by_target[path]
            path = path.rpartition(".")[0]
        return ""


def _assign_paths(paths: Sequence[str]) -> tuple[dict[str, tuple[str, ...]], list[str]]:
    """Where each target lands in the body, and the targets that clash with each other."""
    given = set(paths)
    problems: list[str] = []
    assign: dict[str, tuple[str, ...]] = {}
    for path in paths:
        parts = tuple(path.split("."))
        if path == "customer.address" and any(p.startswith("customer.address.") for p in given):
            problems.append(
                "customer.address is the whole address as text; map either it or its parts "
                "(customer.address.lines, .city, …), not both."
            )
        if len(parts) == 3 and parts[:2] == ("customer", "consent"):
            detailed = {f"{path}.{part}" for part in CONSENT_FIELDS} & given
            if f"{path}.value" in detailed:
                problems.append(f"{path} and {path}.value are the same field; map only one.")
            elif detailed:
                parts = (*parts, "value")  # the answer, given with its timestamp or source
        assign[path] = parts
    return assign, problems


def _rules_build(
    *,
    targets: dict[str, Target],
    workflow_key: str,
    columns: dict[str, tuple[str, str]],
    constants: dict[str, Any],
    where: str,
) -> tuple[list[Rule], list[Rule], list[str]]:
    """Rules for columns ({target: (column, date_format)}) and constants, with every problem
    found, each naming where it is (`where` is "columns." for a mapping file)."""
    problems: list[str] = []
    for path in columns:
        if path not in targets:
            problems.append(f"{where}{path}: {_unknown_target(path, targets, workflow_key)}")
    for path in constants:
        if path not in targets:
            problems.append(f"constants.{path}: {_unknown_target(path, targets, workflow_key)}")
        elif path == "event_id":
            problems.append("constants.event_id: event_id identifies each row; map a column.")
    for path in sorted(set(columns) & set(constants)):
        problems.append(f"{path} is given both a column and a constant; keep one.")
    known = [p for p in [*columns, *constants] if p in targets]
    assign, clashes = _assign_paths(known)
    problems += clashes
    rules: list[Rule] = []
    for path, (column, date_format) in columns.items():
        if path not in targets:
            continue
        target = targets[path]
        if date_format:
            if target.kind != DATE:
                problems.append(
                    f"{where}{path}: date_format applies only to date fields; {path} is not a date."
                )
                continue
            problem = _date_format_problem(date_format)
            if problem:
                problems.append(f"{where}{path}: date_format {problem}")
                continue
        rules.append(Rule(target, assign[path], column=column, date_format=date_format))
    constant_rules: list[Rule] = []
    for path, value in constants.items():
        if path not in targets or path == "event_id":
            continue
        rule = Rule(targets[path], assign[path])
        if isinstance(value, dt.date):  # YAML reads 2026-11-01 as a date
            value = value.isoformat()
        if _is_empty(value) or isinstance(value, dict):
            problems.append(f"constants.{path}: must be a value (text, number, true/false).")
            continue
        try:
            value = _cell_value(value, rule, typed=False)
        except CellInvalid as exc:
            problems.append(f"constants.{path}: {exc}")
            continue
        constant_rules.append(Rule(rule.target, rule.assign, constant=value))
    return rules, constant_rules, problems


def _constants_problems(workflow: Workflow, constants: Sequence[Rule]) -> list[str]:
    """Check constants with the API's own validators once, rather than reject every row."""
    if not constants:
        return []
    body: dict[str, Any] = {
        "workflow": workflow.key,
        "event_id": "constants-check",
        "customer": {"external_id": "constants-check"},
        "data": {},
    }
    for rule in constants:
        _assign(body, rule.assign, rule.constant)
    _, errors = trigger_parse(body)
    data_given = {rule.target.path.removeprefix("data.") for rule in constants}
    data = {k: v for k, v in body["data"].items() if k in data_given}
    _, data_errors = workflow.compiled_contract.validate(data)
    errors.update(data_errors)
    given = [rule.target.path for rule in constants]
    return [
        f"constants.{path}: {' '.join(messages)}"
        for path, messages in errors.items()
        if any(path == g or path.startswith(f"{g}.") for g in given)
    ]


def intake_mapping_read(path: Path) -> dict[str, Any]:
    """Read a mapping file (YAML or JSON) and check its shape; its content is checked
    against the workflow by `intake_plan`."""
    if path.suffix.lower() not in MAPPING_SUFFIXES:
        raise IntakeFileError(
            [f"Mapping file {path.name}: use a .yaml, .yml or .json file, not {path.suffix!r}."]
        )
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise IntakeFileError([f"Cannot read the mapping file {path}: {exc}."]) from exc
    try:
        is_json = path.suffix.lower() == ".json"
        mapping = json.loads(text) if is_json else yaml.safe_load(text)
    except json.JSONDecodeError as exc:
        raise IntakeFileError(
            [f"Mapping file {path.name} is not valid JSON: {exc.msg} (line {exc.lineno})."]
        ) from exc
    except yaml.YAMLError as exc:
        raise IntakeFileError([f"Mapping file {path.name} is not valid YAML: {exc}"]) from exc
    if not isinstance(mapping, dict) or not mapping:
        raise IntakeFileError(
            [f"Mapping file {path.name} must be a mapping with columns: and/or constants:."]
        )
    problems = [
        f"Mapping file {path.name}: unknown section {key!r}; use columns and constants."
        for key in mapping
        if key not in MAPPING_KEYS
    ]
    for key in MAPPING_KEYS:
        if not isinstance(mapping.get(key, {}), dict):
            problems.append(
                f"Mapping file {path.name}: {key} must map field paths to "
                + ("column names." if key == "columns" else "values.")
            )
    if problems:
        raise IntakeFileError(problems)
    return mapping


def _mapping_columns(mapping: dict[str, Any]) -> tuple[dict[str, tuple[str, str]], list[str]]:
    columns: dict[str, tuple[str, str]] = {}
    problems: list[str] = []
    for key, spec in (mapping.get("columns") or {}).items():
        path = str(key)
        where = f"columns.{path}"
        if isinstance(spec, str) and spec.strip():
            columns[path] = (spec.strip(), "")
        elif isinstance(spec, dict):
            unknown = sorted(set(spec) - set(COLUMN_SPEC_KEYS))
            column = spec.get("column")
            if unknown:
                problems.append(
                    f"{where}: unknown key(s) {', '.join(map(str, unknown))}; "
                    "use column and date_format."
                )
            elif not isinstance(column, str) or not column.strip():
                problems.append(f"{where}: give the source column as column: NAME.")
            else:
                columns[path] = (column.strip(), spec.get("date_format") or "")
                if "date_format" in spec and not spec["date_format"]:
                    problems.append(f"{where}: date_format is empty.")
        else:
            problems.append(
                f"{where}: must be a column name, or {{column: NAME, date_format: FORMAT}}."
            )
    return columns, problems


def intake_plan(
    *,
    workflow: Workflow,
    mapping: dict[str, Any] | None,
    header: Sequence[str] | None,
) -> IntakePlan | None:
    """Check the mapping (or, without one, the CSV header) against the workflow and the
    file's header before anything is imported. Raises IntakeFileError naming every problem.

    Returns None for JSON Lines without a mapping: each line then names its own fields.
    """
    targets = intake_targets(workflow=workflow)
    problems: list[str] = []
    if mapping is not None:
        columns, problems = _mapping_columns(mapping)
        constants = {str(path): value for path, value in (mapping.get("constants") or {}).items()}
        where = "columns."
    elif header is not None:
        unknown = [name for name in header if name and name not in targets]
        if unknown:
            problems.append(_unknown_columns(unknown, targets, workflow.key))
        columns = {name: (name, "") for name in header if name in targets}
        constants = {}
        where = ""
    else:
        return None
    rules, constant_rules, more = _rules_build(
        targets=targets,
        workflow_key=workflow.key,
        columns=columns,
        constants=constants,
        where=where,
    )
    problems += more
    if header is not None and mapping is not None:
        present = set(header)
        for rule in rules:
            if rule.column not in present:
                problems.append(
                    f"columns.{rule.target.path}: the file has no column {rule.column!r}; "
                    f"its header has: {', '.join(h for h in header if h)}."
                )
    given = {*columns, *constants}
    missing = [t.path for t in targets.values() if t.required and t.path not in given]
    if missing:
        source = "no column or constant in the mapping" if mapping else "no column in the file"
        problems.append(
            f"Required by workflow {workflow.key} but given {source}: {', '.join(missing)}."
        )
    if not problems:
        problems = _constants_problems(workflow, constant_rules)
    if problems:
        raise IntakeFileError(problems)
    return IntakePlan(
        workflow_key=workflow.key, rules=tuple(rules), constants=tuple(constant_rules)
    )


# --- reading rows ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Source:
    path: Path
    is_csv: bool
    header: tuple[str, ...]
    total: int


def _source_open(path: Path) -> Source:
    """A first pass over the whole file: it must be readable, UTF-8 and (for CSV) well
    formed before a single row is imported. It also counts the rows for progress."""
    suffix = path.suffix.lower()
    if suffix not in INPUT_SUFFIXES:
        raise IntakeFileError(
            [f"{path.name}: use a .csv, .jsonl or .ndjson file, not {suffix or 'no suffix'!r}."]
        )
    if not path.is_file():
        raise IntakeFileError([f"{path} does not exist or is not a file."])
    is_csv = suffix in CSV_SUFFIXES
    header: tuple[str, ...] = ()
    total = 0
    try:
        with path.open(encoding="utf-8-sig", newline="") as handle:
            if is_csv:
                reader = csv.reader(handle)
                first = next(reader, None)
                if first is None:
                    raise IntakeFileError([f"{path.name} is empty: a CSV file needs a header row."])
                header = tuple(name.strip() for name in first)
                total = sum(1 for record in reader if record)
            else:
                total = sum(1 for text in handle if text.strip())
    except UnicodeDecodeError as exc:
        raise IntakeFileError(
            [
                f"{path.name} is not UTF-8 text (byte {exc.start} cannot be read); "
                "save it as UTF-8 and import it again."
            ]
        ) from exc
    except csv.Error as exc:
        raise IntakeFileError(
            [f"{path.name}, line {reader.line_num}: not readable as CSV ({exc})."]
        ) from exc
    except OSError as exc:
        raise IntakeFileError([f"Cannot read {path}: {exc}."]) from exc
    duplicates = sorted({name for name in header if name and header.count(name) > 1})
    if duplicates:
        raise IntakeFileError(
            [f"{path.name}: the header names column(s) {', '.join(duplicates)} more than once."]
        )
    return Source(path=path, is_csv=is_csv, header=header, total=total)


@dataclass
class RowProblem:
    row: int
    event_id: str
    status: str
    field: str
    column: str
    message: str


@dataclass
class PreparedRow:
    """One source row: the trigger body it makes, or the problems that stopped it."""

    number: int
    event_id: str = ""
    body: dict[str, Any] | None = None
    problems: list[RowProblem] = field(default_factory=list)


def _assign(body: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    node = body
    for part in path[:-1]:
        node = node.setdefault(part, {})
    node[path[-1]] = value


def _flat_row(
    number: int,
    values: dict[str, Any],
    plan: IntakePlan,
    *,
    typed: bool,
) -> PreparedRow:
    body: dict[str, Any] = {"workflow": plan.workflow_key, "customer": {}, "data": {}}
    row = PreparedRow(number=number)
    for rule in plan.rules:
        value = values.get(rule.column)
        if _is_empty(value):
            continue
        try:
            _assign(body, rule.assign, _cell_value(value, rule, typed=typed))
        except CellInvalid as exc:
            row.problems.append(
                RowProblem(number, "", "invalid", rule.target.path, rule.column, str(exc))
            )
    for rule in plan.constants:
        _assign(body, rule.assign, rule.constant)
    event_id = body.get("event_id")
    row.event_id = event_id if isinstance(event_id, str) else ""
    for problem in row.problems:
        problem.event_id = row.event_id
    if not row.problems:
        row.body = body
    return row


def _csv_rows(source: Source, plan: IntakePlan) -> Iterator[PreparedRow]:
    width = len(source.header)
    with source.path.open(encoding="utf-8-sig", newline="") as handle:
        reader = csv.reader(handle)
        next(reader)
        # Numbered as a spreadsheet shows them: the header is row 1.
        for number, record in enumerate(reader, start=2):
            if not record:
                continue
            if len(record) != width:
                yield _row_problem(
                    number, f"The row has {len(record)} cells; the header has {width} columns."
                )
                continue
            yield _flat_row(
                number, dict(zip(source.header, record, strict=True)), plan, typed=False
            )


def _row_problem(number: int, *messages: str, event_id: str = "") -> PreparedRow:
    """A row that cannot be read at all, so no field or column can be named."""
    return PreparedRow(
        number=number,
        event_id=event_id,
        problems=[RowProblem(number, event_id, "invalid", "", "", message) for message in messages],
    )


def _nested_row(number: int, values: dict[str, Any], workflow_key: str) -> PreparedRow:
    event_id = values.get("event_id") if isinstance(values.get("event_id"), str) else ""
    named = values.get("workflow")
    if named is not None and named != workflow_key:
        return PreparedRow(
            number=number,
            event_id=event_id,
            problems=[
                RowProblem(
                    number,
                    event_id,
                    "invalid",
                    "workflow",
                    "",
                    f"This file is imported for workflow {workflow_key}; the line names {named!r}.",
                )
            ],
        )
    return PreparedRow(number=number, event_id=event_id, body={**values, "workflow": workflow_key})


def _jsonl_rows(
    source: Source, plan: IntakePlan | None, targets: dict[str, Target], workflow_key: str
) -> Iterator[PreparedRow]:
    plans: dict[frozenset[str], IntakePlan | list[str]] = {}
    with source.path.open(encoding="utf-8-sig") as handle:
        for number, text in enumerate(handle, start=1):
            if not text.strip():
                continue
            try:
                values = json.loads(text)
            except json.JSONDecodeError as exc:
                yield _row_problem(
                    number, f"The line is not valid JSON: {exc.msg} (column {exc.colno})."
                )
                continue
            if not isinstance(values, dict):
                yield _row_problem(number, "Each line must be a JSON object.")
                continue
            if plan is not None:
                yield _flat_row(number, values, plan, typed=True)
            elif isinstance(values.get("customer"), dict) or isinstance(values.get("data"), dict):
                yield _nested_row(number, values, workflow_key)
            else:
                keys = frozenset(values)
                if keys not in plans:
                    plans[keys] = _line_plan(values, targets, workflow_key)
                line_plan = plans[keys]
                if isinstance(line_plan, list):
                    event_id = values.get("event_id")
                    event_id = event_id if isinstance(event_id, str) else ""
                    yield _row_problem(number, *line_plan, event_id=event_id)
                else:
                    yield _flat_row(number, values, line_plan, typed=True)


def _line_plan(
    values: dict[str, Any], targets: dict[str, Target], workflow_key: str
) -> IntakePlan | list[str]:
    """A JSON line of dotted keys without a mapping: its keys are its targets."""
    unknown = [key for key in values if key not in targets]
    rules, _, problems = _rules_build(
        targets=targets,
        workflow_key=workflow_key,
        columns={key: (key, "") for key in values if key in targets},
        constants={},
        where="",
    )
    if unknown:
        problems.insert(0, _unknown_columns(unknown, targets, workflow_key, noun="key"))
    if problems:
        return problems
    return IntakePlan(workflow_key=workflow_key, rules=tuple(rules), constants=())


# --- the import -----------------------------------------------------------------------------


@dataclass
class IntakeSummary:
    """Where an import stands: passed to the progress callback after each chunk, and
    returned at the end."""

    path: Path
    workflow_key: str
    client_name: str
    total: int
    done: int = 0
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STATUSES, 0))
    report_path: Path | None = None

    @property
    def rejected(self) -> int:
        return self.counts["invalid"] + self.counts["conflict"]

    @property
    def ok(self) -> bool:
        return self.rejected == 0

    def progress_line(self) -> str:
        return (
            f"{self.done}/{self.total} rows, {self.counts['created']} created, "
            f"{self.counts['existing']} existing, {self.rejected} rejected"
        )


class _Report:
    """The per-row error report: opened on the first problem, so a clean import leaves no
    file; a report left by an earlier run of the same file is removed, as it is stale."""

    def __init__(self, path: Path):
        self.path = path
        self.handle: TextIO | None = None
        self.writer: Any = None

    def write(self, problem: RowProblem) -> None:
        if self.writer is None:
            self.handle = self.path.open("w", encoding="utf-8", newline="")
            self.writer = csv.writer(self.handle)
            self.writer.writerow(REPORT_FIELDS)
        self.writer.writerow(
            [
                problem.row,
                problem.event_id,
                problem.status,
                problem.field,
                problem.column,
                problem.message,
            ]
        )

    def close(self) -> bool:
        """Close the report; True if one was written."""
        if self.handle is not None:
            self.handle.close()
            return True
        self.path.unlink(missing_ok=True)
        return False


def intake_report_path(path: Path) -> Path:
    return path.with_name(path.name + REPORT_SUFFIX)


def _result_problems(
    row: PreparedRow, result: TriggerResult, plan: IntakePlan | None
) -> list[RowProblem]:
    def column(field_path: str) -> str:
        return plan.column_for(field_path) if plan is not None else ""

    if result.status == "conflict":
        return [
            RowProblem(
                row.number,
                row.event_id,
                "conflict",
                "event_id",
                column("event_id"),
                f"event_id {row.event_id!r} was imported before with a different body "
                f"(fields that differ: {', '.join(result.differences) or 'none named'}); "
                "use a new event_id for a new event.",
            )
        ]
    return [
        RowProblem(row.number, row.event_id, "invalid", path, column(path), message)
        for path, messages in result.errors.items()
        for message in messages
    ]


def _intake_client(name: str) -> ApiClient:
    client = ApiClient.objects.filter(name=name).first()
    if client is None:
        if name != INTAKE_CLIENT_NAME:
            raise IntakeFileError(
                [
                    f"No API client named {name!r}. Create it with `python manage.py "
                    f"create_api_key {name}`, or leave out --client to import as "
                    f"{INTAKE_CLIENT_NAME!r}."
                ]
            )
        try:
            with transaction.atomic():
                # No one calls the API with this client, so its key is not kept anywhere.
                client, _raw_key = api_client_create(name=name)
        except IntegrityError:  # another worker created it first
            client = ApiClient.objects.get(name=name)
    if client.revoked_at is not None:
        raise IntakeFileError([f"The API client {name!r} is revoked; it cannot import triggers."])
    return client


def _chunks(rows: Iterator[PreparedRow], size: int) -> Iterator[list[PreparedRow]]:
    chunk: list[PreparedRow] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def intake_file_import(
    *,
    path: Path,
    workflow_key: str,
    mapping_path: Path | None = None,
    client_name: str = INTAKE_CLIENT_NAME,
    report_path: Path | None = None,
    progress: Callable[[IntakeSummary], None] | None = None,
    chunk_rows: int = CHUNK_ROWS,
) -> IntakeSummary:
    """Import a CSV or JSON Lines file of triggers for one workflow.

    Everything that would make the whole file unusable (its workflow, mapping, header,
    encoding, client) is checked first: IntakeFileError, and nothing is imported. Then rows
    go to `triggers_ingest` in chunks; each row is stored whole or reported, never half.
    """
    path = Path(path)
    report_path = Path(report_path) if report_path else intake_report_path(path)
    if report_path.resolve() == path.resolve():
        raise IntakeFileError(["The error report cannot overwrite the file being imported."])
    workflow = Workflow.objects.filter(key=workflow_key, status=Workflow.Status.ACTIVE).first()
    if workflow is None:
        active = Workflow.objects.filter(status=Workflow.Status.ACTIVE).order_by("key")
        keys = ", ".join(active.values_list("key", flat=True)) or "none"
        raise IntakeFileError(
            [f"No active workflow with key {workflow_key!r}; active workflows: {keys}."]
        )
    mapping = intake_mapping_read(Path(mapping_path)) if mapping_path else None
    source = _source_open(path)
    plan = intake_plan(
        workflow=workflow, mapping=mapping, header=source.header if source.is_csv else None
    )
    client = _intake_client(client_name)

    summary = IntakeSummary(
        path=path, workflow_key=workflow.key, client_name=client.name, total=source.total
    )
    if source.is_csv:
        rows = _csv_rows(source, plan)
    else:
        rows = _jsonl_rows(source, plan, intake_targets(workflow=workflow), workflow.key)
    report = _Report(report_path)
    try:
        for chunk in _chunks(rows, chunk_rows):
            ready = [row for row in chunk if row.body is not None]
            results = triggers_ingest(client=client, raw_triggers=[row.body for row in ready])
            for row, result in zip(ready, results, strict=True):
                summary.counts[result.status] += 1
                row.problems = _result_problems(row, result, plan)
            for row in chunk:
                if row.body is None:
                    summary.counts["invalid"] += 1
                for problem in row.problems:
                    report.write(problem)
            summary.done += len(chunk)
            if progress is not None:
                progress(summary)
    finally:
        if report.close():
            summary.report_path = report_path
    return summary


# --- the drop folder ------------------------------------------------------------------------

PROCESSING, DONE, FAILED = "processing", "done", "failed"
MAPPING_NAMES = ("mapping.yaml", "mapping.yml", "mapping.json")
ERROR_NOTE_SUFFIX = ".error.txt"
CLAIM_STAMP = "%Y%m%dT%H%M%SZ"
CLAIMED_NAME = re.compile(r"^(?P<stamp>\d{8}T\d{6}Z)-(?P<name>.+)$")
# Hidden files are uploads in progress by convention (and editors' lock files start "~").
IGNORED_PREFIXES = (".", "~")


def _is_input(name: str) -> bool:
    return (
        not name.startswith(IGNORED_PREFIXES)
        and name.lower().endswith(INPUT_SUFFIXES)
        and not name.endswith(REPORT_SUFFIX)
    )


def _claim(source: Path, processing: Path, name: str) -> Path | None:
    """Take a file by renaming it into processing/ under a claim stamp. A rename is atomic,
    so of two workers only one succeeds; the other finds the file gone and skips it. The
    stamp also keeps files of the same name (a daily export) apart in done/ and failed/."""
    processing.mkdir(exist_ok=True)
    claimed = processing / f"{dt.datetime.now(dt.UTC).strftime(CLAIM_STAMP)}-{name}"
    if claimed.exists():  # the same name claimed twice within a second: take it next scan
        return None
    try:
        os.rename(source, claimed)
    except FileNotFoundError:
        return None
    except OSError as exc:  # e.g. no write permission on the share: say so, try next scan
        logger.error("Cannot claim %s for intake: %s", source, exc)
        return None
    return claimed


def _folder_claims(
    folder: Path, *, settle_seconds: float, stale_seconds: float, claim_until: float | None
) -> Iterator[Path]:
    """Claim, one at a time, files left in processing/ by a crashed worker and then files
    that have settled. One at a time, so a long import does not hold claims it has not
    started; and no new claim once `claim_until` (a time.monotonic value) has passed."""
    processing = folder / PROCESSING
    stale: list[tuple[Path, str]] = []
    if processing.is_dir():
        for path in sorted(processing.iterdir()):
            match = CLAIMED_NAME.match(path.name)
            if not match or not _is_input(match["name"]):
                continue
            claimed_at = dt.datetime.strptime(match["stamp"], CLAIM_STAMP).replace(tzinfo=dt.UTC)
            # A job is killed at the django-q timeout, so a claim older than that is orphaned.
            if time.time() - claimed_at.timestamp() > stale_seconds:
                stale.append((path, match["name"]))
    fresh = sorted(p for p in folder.iterdir() if p.is_file() and _is_input(p.name))
    for path, name in [*stale, *((p, p.name) for p in fresh)]:
        if claim_until is not None and time.monotonic() > claim_until:
            return
        if path.parent == folder:
            try:
                if time.time() - path.stat().st_mtime < settle_seconds:
                    continue
            except FileNotFoundError:
                continue
        claimed = _claim(path, processing, name)
        if claimed is None:
            continue
        if path.parent == processing:
            logger.warning("Re-driving %s, left in processing by a stopped worker.", path)
            # Rows the stopped worker stored come back as existing; its partial report goes.
            path.with_name(path.name + REPORT_SUFFIX).unlink(missing_ok=True)
        yield claimed


def _folder_mapping(folder: Path) -> Path | None:
    found = [folder / name for name in MAPPING_NAMES if (folder / name).is_file()]
    if len(found) > 1:
        raise IntakeFileError(
            [
                f"The drop folder {folder.name}/ has {' and '.join(p.name for p in found)}; "
                "keep one mapping file."
            ]
        )
    return found[0] if found else None


def _file_away(claimed: Path, destination: Path, companions: Sequence[Path]) -> Path:
    """Move a claimed file and its report to done/ or failed/. Reports go first: if the
    worker stops in between, the file itself is still in processing/ and is re-driven."""
    destination.mkdir(exist_ok=True)
    for companion in companions:
        if companion.exists():
            os.replace(companion, destination / companion.name)
    moved = destination / claimed.name
    os.replace(claimed, moved)
    return moved


def _claimed_import(folder: Path, claimed: Path) -> dict[str, Any]:
    report = claimed.with_name(claimed.name + REPORT_SUFFIX)
    note = claimed.with_name(claimed.name + ERROR_NOTE_SUFFIX)
    outcome: dict[str, Any] = {"workflow": folder.name, "file": claimed.name}
    try:
        summary = intake_file_import(
            path=claimed,
            workflow_key=folder.name,
            mapping_path=_folder_mapping(folder),
            report_path=report,
            progress=lambda state: logger.info("Intake of %s: %s", claimed, state.progress_line()),
        )
    except IntakeFileError as exc:
        note.write_text(f"{claimed.name} was not imported:\n{exc}\n", encoding="utf-8")
        moved = _file_away(claimed, folder / FAILED, [note])
        logger.warning("Intake of %s failed, nothing imported: %s", moved, exc)
        return {**outcome, "outcome": FAILED, "error": str(exc)}
    destination = DONE if summary.ok else FAILED
    moved = _file_away(claimed, folder / destination, [report])
    logger.info("Intake of %s: %s; moved to %s/.", moved, summary.progress_line(), destination)
    return {**outcome, "outcome": destination, "counts": summary.counts}


def intake_folder_scan(
    *,
    root: Path,
    settle_seconds: float,
    stale_seconds: float,
    claim_until: float | None = None,
) -> list[dict[str, Any]]:
    """Import each complete file in the drop folder once: root/<workflow_key>/*.csv|jsonl|
    ndjson, with an optional root/<workflow_key>/mapping.yaml. Each file ends in done/ (every
    row ok) or failed/ (rows rejected, with <name>.errors.csv; or the file unusable, with
    <name>.error.txt). Safe to run twice at once and to repeat: claims are atomic renames,
    and rows already stored come back as existing."""
    root = Path(root)
    if not root.is_dir():
        logger.warning("INTAKE_DIR %s is not a folder; nothing to scan.", root)
        return []
    outcomes: list[dict[str, Any]] = []
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    for folder in folders:
        claims = _folder_claims(
            folder,
            settle_seconds=settle_seconds,
            stale_seconds=stale_seconds,
            claim_until=claim_until,
        )
        for claimed in claims:
            try:
                outcomes.append(_claimed_import(folder, claimed))
            except Exception:
                # Left in processing/: re-driven once its claim is stale, like after a crash.
                logger.exception("Intake of %s stopped; it will be retried.", claimed)
                outcomes.append({"workflow": folder.name, "file": claimed.name, "outcome": "retry"})
    return outcomes
