"""File/batch targets: outcomes appended to one CSV file per operation file and day in a
drop folder, with a manifest (files, row counts, SHA-256) and a SHA256SUMS file.

Every write is whole-file and atomic (temp file, fsync, os.replace, fsync of the folder),
so a reader never sees half a row, and a crash leaves the previous complete file. Rows
carry the operation's idempotency key; a key already in the file is not appended again.
"""

from __future__ import annotations

import csv
import fcntl
import hashlib
import io
import json
import os
import re
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from writeback.adapters.base import OK, PERMANENT, RETRY, Adapter, Answer, OperationRequest

KEY_COLUMNS = ["idempotency_key", "outcome_id", "operation"]
SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


def write_atomic(path: Path, content: bytes) -> None:
    temp = path.with_name(f".{path.name}.tmp")
    with open(temp, "wb") as handle:
        handle.write(content)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temp, path)
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)  # the rename itself must survive a power cut
    finally:
        os.close(folder)


def _csv_read(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    if not path.exists():
        return [], []
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        return list(reader.fieldnames or []), list(reader)


def _cell(value: Any) -> str:
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"), sort_keys=True)
    return "" if value is None else str(value)


class FileAdapter(Adapter):
    kind = "file"

    def folder(self, period: str) -> Path:
        return Path(self.target.drop_folder) / self.target.key / period

    @contextmanager
    def _locked(self, folder: Path):
        """Workers on one machine append to the same day's files: one at a time."""
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / ".lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def send(self, request: OperationRequest) -> Answer:
        started = time.monotonic()
        folder = self.folder(request.period)
        csv_path = folder / f"{request.file}.csv"
        try:
            with self._locked(folder):
                header, rows = _csv_read(csv_path)
                number = next(
                    (
                        i
                        for i, row in enumerate(rows, 1)
                        if row.get("idempotency_key") == request.idempotency_key
                    ),
                    None,
                )
                if number is None:
                    row = {
                        "idempotency_key": request.idempotency_key,
                        "outcome_id": request.outcome_id,
                        "operation": request.operation,
                        **{k: _cell(v) for k, v in (request.body or {}).items()},
                    }
                    if request.document is not None:
                        row.update(self._document_copy(folder, request))
                    header = header or list(KEY_COLUMNS)
                    header += [name for name in row if name not in header]
                    rows.append(row)
                    number = len(rows)
                    buffer = io.StringIO()
                    writer = csv.DictWriter(buffer, fieldnames=header, lineterminator="\n")
                    writer.writeheader()
                    writer.writerows(rows)
                    write_atomic(csv_path, buffer.getvalue().encode())
                    self._manifest_write(folder)
        except OSError as exc:
            return Answer(RETRY, error_kind="io", detail=type(exc).__name__)
        elapsed = int((time.monotonic() - started) * 1000)
        return Answer(OK, reference=f"{csv_path.name}#{number}", elapsed_ms=elapsed)

    def _document_copy(self, folder: Path, request: OperationRequest) -> dict[str, str]:
        document = request.document
        documents = folder / "documents"
        documents.mkdir(exist_ok=True)
        name = SAFE_NAME.sub("_", f"{request.outcome_id}-{request.operation}-{document.name}")
        write_atomic(documents / name, document.content)
        return {
            "document_file": f"documents/{name}",
            "document_sha256": hashlib.sha256(document.content).hexdigest(),
            "document_size": str(len(document.content)),
        }

    def _manifest_write(self, folder: Path) -> None:
        entries = []
        for path in sorted(folder.glob("*.csv")):
            content = path.read_bytes()
            entries.append(
                {
                    "file": path.name,
                    "rows": len(_csv_read(path)[1]),
                    "sha256": hashlib.sha256(content).hexdigest(),
                }
            )
        documents = [
            {
                "file": f"documents/{path.name}",
                "size": path.stat().st_size,
                "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
            }
            for path in sorted((folder / "documents").glob("*"))
            if not path.name.startswith(".")
        ]
        manifest = {"target": self.target.key, "period": folder.name, "files": entries}
        manifest["documents"] = documents
        sums = "".join(f"{e['sha256']}  {e['file']}\n" for e in entries + documents)
        write_atomic(folder / "SHA256SUMS", sums.encode())
        write_atomic(folder / "manifest.json", json.dumps(manifest, indent=2).encode())

    def read(self, request: OperationRequest, reference: str) -> Answer:
        folder = self.folder(request.period)
        _, rows = _csv_read(folder / f"{request.file}.csv")
        for row in rows:
            if row.get("idempotency_key") == request.idempotency_key:
                return Answer(OK, reference=reference, record=row)
        return Answer(PERMANENT, error_kind="missing_row", detail=f"{reference} is not in the file")
