"""``valind validate ...``: build the 1-of-4 tasks, annotate them (LLM or human page), export, score.

Each command parses its options and calls ``valind.validate``; nothing else happens here.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
import xxhash
from rich.table import Table

validate_app = typer.Typer(help="Validate the value extractor with the study's 1-of-4 protocol (docs/validation.md).",
                           no_args_is_help=True)

WorkspaceOpt = Annotated[Path, typer.Option("--workspace", "-w", help="Workspace folder.")]
ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="YAML config file (default: the workspace's).")]
SetOpt = Annotated[list[str] | None, typer.Option("--set", help="Override a config field: section.field=value (repeatable).")]
AnnotatorOpt = Annotated[str, typer.Option("--annotator", "-a", help="Annotator name: letters, digits, '_', '-', '.'.")]


F = TypeVar("F", bound=Callable[..., Any])


def _cli() -> Any:
    from valind import (
        cli,  # imported late: valind.cli imports this module to register the sub-app
    )

    return cli


def _friendly(fn: F) -> F:
    """valind.cli's ``_friendly_errors``: the project's errors as one message and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return _cli()._friendly_errors(fn)(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


@validate_app.command("build")
@_friendly
def build(
    workspace: WorkspaceOpt,
    per_value: Annotated[int, typer.Option("--per-value", "-n", help="Responses drawn per value subset.")] = 20,
    seed: Annotated[int, typer.Option(help="Seed of the draw (responses, distractors, option order, task order).")] = 0,
    exclude_found: Annotated[bool, typer.Option("--exclude-found/--include-found",
                                                help="Leave out of the distractors every value the extractor found in the response.")] = True,
    force: Annotated[bool, typer.Option("--force", help="Draw new tasks even though answers to the current ones exist.")] = False,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Draw the tasks: per selected value, responses of its subset with the value and 3 distractors (validate/tasks.jsonl)."""
    from valind.validate import build_tasks
    from valind.workspace import Workspace

    cli = _cli()
    cfg = cli._config(config, set_, workspace)
    result = build_tasks(cfg, Workspace(workspace), per_value, seed, exclude_found, force=force)
    report = result.tasks.report
    title = "validate build" + (" (up to date, nothing to do)" if result.skipped else "")
    table = Table(title=title, title_justify="left")
    for col in ("value", "tasks", "subset pairs"):
        table.add_column(col, justify="right" if col != "value" else "left")
    for value in report["values"]:
        table.add_row(value, str(report["per_value"][value]), f"{report['available'][value]:,}")
    cli.out.print(table)
    dropped = ", ".join(f"{k} {v}" for k, v in report["dropped"].items()) or "none"
    cli.out.print(f"{report['tasks']} tasks (seed {seed}, extractor {report['extractor_id']}); dropped: {dropped}; "
                  f"file: {result.path}", soft_wrap=True, highlight=False)


def _default_name(backend: str, model: str) -> str:
    """An annotator name from the model: 'meta-llama/Llama-3.1-8B' -> 'meta-llama--Llama-3.1-8B'."""
    name = re.sub(r"\.{2,}", ".", re.sub(r"[^A-Za-z0-9_.-]+", "-", model.replace("/", "--"))).strip("-._")[:64]
    return name or backend


@validate_app.command("annotate")
@_friendly
def annotate(
    workspace: WorkspaceOpt,
    backend: Annotated[str, typer.Option("--backend", "-b", help="hf (default, CPU or one GPU), vllm, openai (any compatible server), fake.")] = "hf",
    model: Annotated[str, typer.Option("--model", "-m", help="Model name, local path, or smollm2-135m-instruct (packaged).")] = "smollm2-135m-instruct",
    name: Annotated[str | None, typer.Option("--name", help="Annotator name (default: from the model).")] = None,
    base_url: Annotated[str | None, typer.Option("--base-url", help="openai: server URL, e.g. http://127.0.0.1:8000/v1.")] = None,
    max_new_tokens: Annotated[int, typer.Option(help="Answer length limit in tokens (the answer is one letter).")] = 8,
    batch_size: Annotated[int | None, typer.Option(help="Tasks per batch and per cache write.")] = None,
    limit: Annotated[int | None, typer.Option(help="Answer only the first N tasks (presentation order).")] = None,
    with_prompt: Annotated[bool, typer.Option("--with-prompt/--no-prompt", help="Show the conversation before the response.")] = True,
    max_retries: Annotated[int, typer.Option(help="Ask again after an answer that names no option.")] = 1,
    fake_accuracy: Annotated[float, typer.Option(help="fake: probability of picking the target.")] = 0.8,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Answer every task with an LLM annotator (or the fake); answers in validate/answers/<name>.jsonl."""
    from valind.cache import Cache
    from valind.errors import UnknownNameError
    from valind.generate.base import BACKENDS, make_backend
    from valind.generate.cells import CellKind, ModelCell
    from valind.generate.config import BackendName
    from valind.validate import FakeAnnotator, LLMAnnotator, read_tasks, run_annotator
    from valind.workspace import Workspace, annotator_name

    cli = _cli()
    if backend not in BACKENDS:
        raise UnknownNameError("annotator backend", backend, list(BACKENDS))
    cfg = cli._config(config, set_, workspace)
    ws = Workspace(workspace)
    who = annotator_name(name or ("fake" if backend == "fake" else _default_name(backend, model)))
    read_tasks(ws)  # says what to run first before a model is loaded
    closer: Any = None
    if backend == "fake":
        annotator: Any = FakeAnnotator(fake_accuracy, seed=xxhash.xxh3_64_intdigest(who.encode()) % 2**31)  # fakes differ by name
    else:
        gen_cfg = cfg.generate.model_copy(update={
            "backend": BackendName(backend), "base_url": base_url or cfg.generate.base_url, "max_new_tokens": max_new_tokens,
            "temperature": 0.0, "batch_size": batch_size, "model_names": {},
        })
        cell = ModelCell(label="annotator", kind=CellKind.BASE, base=model)
        closer = make_backend(gen_cfg, cfg.resolved_cache_dir(), [cell])
        annotator = LLMAnnotator(closer.open(cell), with_prompt=with_prompt, max_retries=max_retries)
    try:
        with Cache(cfg.resolved_cache_dir() / "calls.sqlite") as cache, cli._progress() as progress:
            start = cli._progress_factory(progress)
            bar: list[Any] = []

            def on_progress(done: int, total: int) -> None:
                if not bar:
                    bar.append(start(f"annotate ({who})", total))
                bar[0](done)

            result = run_annotator(ws, annotator, who, cache=cache, batch_size=batch_size or cfg.generate.resolved_batch_size,
                                   limit=limit, progress=on_progress)
    finally:
        if closer is not None:
            closer.close()
    failed = ", ".join(f"{k} {v}" for k, v in result.failed.items()) or "none"
    per_task = f"{result.seconds_per_task:.2f} s per task" if result.seconds_per_task else "all from the cache"
    cli.out.print(f"{result.annotator}: {result.tasks} tasks, {result.ok} answered, failed: {failed}; "
                  f"{result.reused} from cache, {result.computed} asked ({per_task}) -> {result.path}",
                  soft_wrap=True, highlight=False)


@validate_app.command("serve")
@_friendly
def serve(
    workspace: WorkspaceOpt,
    annotator: AnnotatorOpt,
    host: Annotated[str, typer.Option(help="Address to listen on; keep 127.0.0.1 unless others must reach it.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port (0: any free port).")] = 8765,
) -> None:
    """Start the local annotation page for a human annotator; prints its URL (with the session token)."""
    from valind.validate.server import LOOPBACK, AnnotationServer
    from valind.workspace import Workspace

    cli = _cli()
    try:
        server = AnnotationServer(Workspace(workspace), annotator, host, port)
    except OSError as err:
        from valind.errors import ValindError

        raise ValindError(f"cannot listen on {host}:{port} ({err.strerror or err}); try another --port") from None
    if host not in LOOPBACK:
        cli.err.print(f"[bold yellow]warning:[/] listening on {host}: anyone who can reach it and has the URL can answer")
    cli.out.print(f"annotation page for {server.annotator} ({len(server.tasks.tasks)} tasks, "
                  f"{len(server.latest)} answered so far); open:\n{server.url}\nanswers: {server.path}\nCtrl+C stops.",
                  soft_wrap=True, highlight=False)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        cli.out.print("stopped")
    finally:
        server.httpd.server_close()


@validate_app.command("export")
@_friendly
def export(
    workspace: WorkspaceOpt,
    output: Annotated[Path, typer.Option("--output", "-o", help="Output file: .csv or .jsonl.")],
    annotator: Annotated[str | None, typer.Option("--annotator", "-a", help="Only this annotator (default: all).")] = None,
) -> None:
    """Write the latest answer per task and annotator, joined with the task (target, options, correct)."""
    from valind.validate.export import export_answers
    from valind.workspace import Workspace

    cli = _cli()
    n = export_answers(Workspace(workspace), output, annotator)
    cli.out.print(f"{n} answers -> {output}", highlight=False)


@validate_app.command("score")
@_friendly
def score(workspace: WorkspaceOpt) -> None:
    """Precision per annotator and value (95% Wilson intervals), agreement; writes validate/scores.json and scores.csv."""
    from valind.stats import Proportion
    from valind.validate import score_validation
    from valind.workspace import Workspace

    cli = _cli()
    ws = Workspace(workspace)
    result = score_validation(ws)
    s = result.scores

    def fmt(p: dict[str, Any] | None) -> str:
        return "-" if p is None else Proportion(p["k"], p["n"], p["rate"], p["lo"], p["hi"]).fmt()

    table = Table(title=f"extractor validation: 1-of-4 precision ({result.tasks} tasks; random {s['random_baseline']:.2f})",
                  title_justify="left")
    for col in ("annotator", "kind", "precision [95% CI] (k/n)", "failed", "unanswered", "picks by letter A/B/C/D"):
        table.add_column(col)
    for name, a in s["annotators"].items():
        c = result.counts[name]
        table.add_row(name, a["kind"], fmt(a["overall"]), str(c["failed"]), str(c["unanswered"]),
                      "/".join(str(n) for n in result.letters[name].values()))
    cli.out.print(table)
    values = list(dict.fromkeys(v for a in s["annotators"].values() for v in a["per_value"]))
    per_value = Table(title="per value", title_justify="left")
    per_value.add_column("value")
    for name in s["annotators"]:
        per_value.add_column(name)
    for v in values:
        per_value.add_row(v, *(fmt(a["per_value"].get(v)) for a in s["annotators"].values()))
    cli.out.print(per_value)
    ag = s["agreement"]
    if ag["fleiss_kappa"] is not None or ag["union"] is not None:
        kappa = "n/a" if ag["fleiss_kappa"] is None else f"{ag['fleiss_kappa']:.3f}"
        cli.out.print(f"agreement over {ag['n_items']} tasks all answered: Fleiss' kappa {kappa}; "
                      f"union {fmt(ag['union'])}; intersection {fmt(ag['intersection'])}", soft_wrap=True, highlight=False)
    cli.out.print(f"scores: {ws.validate_scores}", soft_wrap=True, highlight=False)
