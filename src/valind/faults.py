"""Deterministic fault injection for the reliability tests: kill the process at a named point.

A few places that matter for crash safety call ``point(name, detail)``:

- ``write``: inside ``workspace.atomic_path``, after the temporary file is complete and before it is
  renamed into place (detail: the final path);
- ``cache``: inside ``Cache.put_many``, right after a batch of results is committed (detail: the
  namespace: ``extract``, ``judge``, ``generate``, ``ref_logps``);
- ``ingest``: after each Parquet row group of an ingested source is handed to the writer (detail: the
  source name), so the output file is half written.

Two environment variables drive it; with neither set, ``point`` only reads a module-level flag:

- ``VALIND_FAULT_KILL_AT=NAME:N`` sends SIGKILL to this process the N-th time point NAME is reached
  (``*:N``: the N-th point of any name). No cleanup runs, as after a power cut or an OOM kill.
- ``VALIND_FAULT_TRACE=FILE`` appends one line per point reached, ``<index>\\t<name>\\t<detail>``
  (index counts every point from 1), so a test can choose kill points inside each stage.
"""

from __future__ import annotations

import os
import signal

_KILL_ENV = "VALIND_FAULT_KILL_AT"
_TRACE_ENV = "VALIND_FAULT_TRACE"
_counts: dict[str, int] = {}
_enabled = bool(os.environ.get(_KILL_ENV) or os.environ.get(_TRACE_ENV))


def point(name: str, detail: str = "") -> None:
    """Count one passage through point ``name``; trace it and kill the process if told to."""
    if not _enabled:
        return
    _counts[name] = _counts.get(name, 0) + 1
    _counts["*"] = _counts.get("*", 0) + 1
    trace = os.environ.get(_TRACE_ENV)
    if trace:
        with open(trace, "a", encoding="utf-8") as f:
            f.write(f"{_counts['*']}\t{name}\t{detail}\n")
    target, _, n = os.environ.get(_KILL_ENV, "").rpartition(":")
    if target in (name, "*") and n.isdigit() and _counts[target] == int(n):
        os.kill(os.getpid(), signal.SIGKILL)
