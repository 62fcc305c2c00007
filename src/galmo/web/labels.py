"""The expert-label store of a run folder: an append-only JSON-lines journal, one fsynced line per event.

``RUN/expert_labels.jsonl`` holds events, never rewritten::

    {"seq": 3, "event": "label", "id": "g0012", "decision": "class", "label": 2, "label_name": "ring",
     "who": "ana", "when": "2025-05-01T10:12:03.412+00:00"}
    {"seq": 4, "event": "undo", "undoes": 3, "who": "ana", "when": "..."}

Decisions: ``class`` (a class index of the run), ``skip`` (seen, no answer: leaves the queue) and
``not_a_galaxy``. Each line is written with one ``write`` + ``flush`` + ``os.fsync`` under a lock, so a
crash loses at most the label being saved, and a half-written last line (a crash mid-write) is
ignored when the journal is read back. The current labels are the journal replayed (the last active
event per galaxy); :meth:`LabelStore.export` compacts them to ``expert_labels.parquet`` (or CSV).
"""

from __future__ import annotations

import getpass
import json
import os
import threading
import warnings
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from galmo.core.catalog import write_catalog
from galmo.core.errors import GalmoError

JOURNAL = "expert_labels.jsonl"
EXPORT = "expert_labels.parquet"
DECISIONS = ("class", "skip", "not_a_galaxy")
COLUMNS = ["id", "label", "label_name", "decision", "who", "when", "seq"]


def default_who() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no login name (a container without a passwd entry)
        return "expert"


class LabelStore:
    """The labels of one run (``class_names``: its classes; a label must be one of them)."""

    def __init__(self, run_dir, class_names):
        self.path = Path(run_dir) / JOURNAL
        self.class_names = list(class_names)
        self._lock = threading.Lock()
        self._events: list[dict] = []
        self._active: dict[int, dict] = {}  # seq → label event not undone
        self._load()

    # ------------------------------------------------------------------ reading
    def _load(self) -> None:
        if not self.path.exists():
            return
        lines = self.path.read_text(encoding="utf-8").splitlines()
        for k, line in enumerate(lines):
            try:
                self._apply(json.loads(line))
            except (json.JSONDecodeError, KeyError, TypeError):
                if k < len(lines) - 1 or not line.strip():
                    warnings.warn(f"{self.path}: line {k + 1} is not a label event: ignored", stacklevel=2)

    def _apply(self, ev: dict) -> None:
        self._events.append(ev)
        if ev["event"] == "label":
            self._active[ev["seq"]] = ev
        elif ev["event"] == "undo":
            self._active.pop(ev["undoes"], None)

    def current(self) -> dict[str, dict]:
        """id → its latest active label event."""
        with self._lock:
            return {ev["id"]: ev for ev in sorted(self._active.values(), key=lambda e: e["seq"])}

    def decided(self) -> set[str]:
        return set(self.current())

    def __len__(self) -> int:
        return len(self.current())

    # ------------------------------------------------------------------ writing
    def check(self, decision: str, label) -> tuple[int, str]:
        """(label index, label name) of a decision; GalmoError for a decision or class the run does not have."""
        if decision not in DECISIONS:
            raise GalmoError(f"unknown decision {decision!r} (one of {', '.join(DECISIONS)})")
        if decision != "class":
            return -1, decision.replace("_", " ")
        if isinstance(label, bool) or not isinstance(label, int) or not 0 <= label < len(self.class_names):
            raise GalmoError(f"label {label!r} is not a class of this run (0..{len(self.class_names) - 1})")
        return label, self.class_names[label]

    def add(self, ident: str, decision: str, label=None, who: str | None = None) -> dict:
        """Record one decision on galaxy ``ident``; returns the event (fsynced before returning)."""
        index, name = self.check(decision, label)
        return self._append({"event": "label", "id": str(ident), "decision": decision, "label": index,
                             "label_name": name, "who": who or default_who()})

    def undo(self, who: str | None = None) -> dict | None:
        """Undo the latest active label (``who``'s latest when given); the undone event, or None."""
        with self._lock:
            mine = [e for e in self._active.values() if who is None or e.get("who") == who]
        if not mine:
            return None
        last = max(mine, key=lambda e: e["seq"])
        self._append({"event": "undo", "undoes": last["seq"], "id": last["id"], "who": who or last.get("who")})
        return last

    def _append(self, ev: dict) -> dict:
        with self._lock:
            ev = {"seq": (self._events[-1]["seq"] + 1) if self._events else 1, **ev,
                  "when": datetime.now(timezone.utc).isoformat(timespec="milliseconds")}
            line = json.dumps(ev, ensure_ascii=False) + "\n"
            try:
                self._write(line)
            except OSError as e:
                raise GalmoError(f"cannot save the label ({e.strerror or e})", path=self.path) from e
            self._apply(ev)
        return ev

    def _write(self, line: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a+b") as f:
            if f.tell():  # a torn last line (crash mid-write) must not swallow this one
                f.seek(-1, os.SEEK_END)
                if f.read(1) != b"\n":
                    line = "\n" + line
            f.write(line.encode("utf-8"))
            f.flush()
            os.fsync(f.fileno())

    # ------------------------------------------------------------------ export
    def table(self) -> pd.DataFrame:
        rows = list(self.current().values())
        return pd.DataFrame([{c: r.get(c) for c in COLUMNS} for r in rows], columns=COLUMNS).astype(
            {"id": str, "label": "int64", "seq": "int64"})

    def export(self, path=None) -> Path:
        """The current labels as a table (Parquet or CSV by the extension; default ``RUN/expert_labels.parquet``)."""
        return write_catalog(self.table(), Path(path) if path else self.path.with_name(EXPORT))


def read_expert_labels(path) -> pd.DataFrame:
    """An exported label table (id, label, decision, ...); GalmoError naming the file when it is not one."""
    from galmo.core.catalog import read_catalog

    df = read_catalog(path)
    missing = [c for c in ("label", "decision") if c not in df.columns]
    if missing:
        raise GalmoError(f"not an expert-label table: no {', '.join(missing)} column (export one from galmo serve)",
                         path=path)
    bad = ~df["decision"].isin(DECISIONS)
    if bad.any():
        raise GalmoError(f"{int(bad.sum())} rows with an unknown decision (e.g. {df['decision'][bad].iloc[0]!r})",
                         path=path)
    return df


def write_journal(run_dir, labels: pd.DataFrame) -> Path:
    """A new journal in ``run_dir`` holding ``labels`` (an exported table) as its events, who and when kept:
    a fine-tuned run starts with the labels it was trained on, so labelling goes on from there."""
    from galmo.core.io import write_text

    now = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
    lines = []
    for seq, r in enumerate(labels.to_dict("records"), start=1):
        lines.append(json.dumps({"seq": seq, "event": "label", "id": str(r["id"]), "decision": r["decision"],
                                 "label": int(r["label"]), "label_name": str(r.get("label_name", "")),
                                 "who": str(r.get("who") or default_who()), "when": str(r.get("when") or now)},
                                ensure_ascii=False))
    return write_text(Path(run_dir) / JOURNAL, "".join(line + "\n" for line in lines))
