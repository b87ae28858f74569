"""Judgements appended to a JSONL file as they complete, so a killed annotation resumes without redoing work.

Each line is {"key": sha256(model id, backend settings, template, text), "p_yes": float | null}: a judgement is
reused only by the same judge with the same settings (dtype, abstention threshold, server). A line cut short by a
kill is ignored on reading (its item is judged again); provenance (model, template, backend, dates) sits beside the
file in `<name>.provenance.json`.
"""
from __future__ import annotations

import datetime
import hashlib
import json
import logging
import math
import os
from pathlib import Path

from ..io import write_json

logger = logging.getLogger(__name__)


def cache_key(*parts: str) -> str:
    """sha256 of the parts (the judge's model id and settings, the template, the rendered messages)."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode("utf-8"))
        digest.update(b"\x00")  # parts cannot run into each other
    return digest.hexdigest()


class JudgementCache:
    def __init__(self, path: str | Path, provenance: dict):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.values: dict[str, float] = {}
        if self.path.exists():
            self._read()
        self._write_provenance(provenance)

    def _read(self) -> None:
        lines = self.path.read_bytes().split(b"\n")
        unterminated = lines.pop()  # b"" when the file ends with a newline, as every complete write does
        for number, line in enumerate(lines, start=1):
            if line.strip() and not self._parse(line):
                raise ValueError(f"{self.path}: line {number} is not a judgement record")
        if unterminated and not self._parse(unterminated):
            # The line a kill cut short: dropped, so its item is judged again and appends start on a fresh line.
            logger.warning("%s: ignoring the unfinished last line of a killed run", self.path)
            with self.path.open("r+b") as handle:
                handle.truncate(sum(len(line) + 1 for line in lines))
        elif unterminated:
            with self.path.open("ab") as handle:
                handle.write(b"\n")

    def _parse(self, line: bytes) -> bool:
        try:
            record = json.loads(line)
            value = record["p_yes"]
            self.values[record["key"]] = float("nan") if value is None else float(value)
        except (ValueError, KeyError, TypeError):
            return False
        return True

    def _write_provenance(self, provenance: dict) -> None:
        meta_path = self.path.with_name(self.path.stem + ".provenance.json")
        now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        meta = json.loads(meta_path.read_text()) if meta_path.exists() else {"created": now}
        meta.update(provenance, updated=now)
        write_json(meta_path, meta)

    def __contains__(self, key: str) -> bool:
        return key in self.values

    def __getitem__(self, key: str) -> float:
        return self.values[key]

    def __len__(self) -> int:
        return len(self.values)

    def add(self, entries: dict[str, float]) -> None:
        """Appends finished judgements and flushes them to disk before returning."""
        if not entries:
            return
        # Stored rounded, and kept in memory exactly as stored, so a resumed run reads what a fresh one used.
        entries = {key: float(value) if math.isnan(value) else round(float(value), 6) for key, value in entries.items()}
        lines = "".join(json.dumps({"key": key, "p_yes": None if math.isnan(value) else value}) + "\n"
                        for key, value in entries.items())
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(lines)
            handle.flush()
            os.fsync(handle.fileno())
        self.values.update(entries)
