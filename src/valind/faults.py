"""Deterministic fault injection for the reliability tests: kill the process at a named point.

A few places that matter for crash safety call ``point(name, detail)``:

- ``write``: inside ``workspace.atomic_path``, after the temporary file is complete and before it is
  renamed into place (detail: the final path);
- ``cache``: inside ``Cache.put_many``, right after a batch of results is committed (detail: the
  namespace: ``extract``, ``judge``, ``generate``, ``ref_logps``);
- ``ingest``: after each Parquet row group of an ingested source is handed to the writer (detail: the
  source name), so the output file is half written.

Two environment variables drive it; with neither set, ``point`` only reads a module-level flag:

- ``VALIND_FAULT_KILL_AT=TARGET:N`` sends SIGKILL to this process the N-th time a point matching
  TARGET is reached. TARGET is a point name (``cache``), ``*`` (any point), or ``NAME@TEXT``: point
  NAME with TEXT in its detail (``write@/subsets/``, ``cache@generate``). No cleanup runs, as after a
  power cut or an OOM kill.
- ``VALIND_FAULT_TRACE=FILE`` appends one line per point reached, ``<index>\\t<name>\\t<detail>``
  (index counts every point from 1), so a test can choose kill points inside each stage.
"""

from __future__ import annotations

import os
import signal

_KILL_ENV = "VALIND_FAULT_KILL_AT"
_TRACE_ENV = "VALIND_FAULT_TRACE"
_enabled = bool(os.environ.get(_KILL_ENV) or os.environ.get(_TRACE_ENV))
_seen = 0  # points reached, of any name
_hits = 0  # points reached that match the kill target


def point(name: str, detail: str = "") -> None:
    """Count one passage through point ``name``; trace it and kill the process if told to."""
    global _seen, _hits
    if not _enabled:
        return
    _seen += 1
    trace = os.environ.get(_TRACE_ENV)
    if trace:
        with open(trace, "a", encoding="utf-8") as f:
            f.write(f"{_seen}\t{name}\t{detail}\n")
    target, _, n = os.environ.get(_KILL_ENV, "").rpartition(":")
    if n.isdigit() and matches(target, name, detail):
        _hits += 1
        if _hits == int(n):
            os.kill(os.getpid(), signal.SIGKILL)


def matches(target: str, name: str, detail: str) -> bool:
    """Whether kill target ``*``, ``NAME`` or ``NAME@TEXT`` covers point ``name`` with ``detail``."""
    want, _, text = target.partition("@")
    return want in ("*", name) and text in detail
