"""The ``valind`` command line: parse arguments, call the stage functions, print summaries."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from valind import __version__
from valind.config import Config, apply_overrides, demo_config_path, load_config_data, validate_config
from valind.errors import ValindError
from valind.ingest import run_ingest
from valind.pipeline import STAGES, Stage, stages_to_run
from valind.workspace import Workspace

# Library progress bars and info logs (weight loading, conversion) would bury the stage summaries.
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

app = typer.Typer(
    name="valind",
    help="Induce values into language models from preference data and measure the side effects.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
# tables need room: when output goes to a file or pipe, lay them out 120 columns wide
out = Console(width=None if sys.stdout.isatty() else 120)
err = Console(stderr=True)

F = TypeVar("F", bound=Callable[..., Any])

WorkspaceOpt = Annotated[Path, typer.Option("--workspace", "-w", help="Workspace folder (created if missing).")]
ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="YAML config file.")]
SetOpt = Annotated[list[str] | None, typer.Option("--set", help="Override a config field: section.field=value (repeatable).")]
WaitOpt = Annotated[float, typer.Option("--wait", help="Seconds to wait for another run on the same workspace to finish (0: stop at once).")]


def _friendly_errors(fn: F) -> F:
    """Print the project's own errors as one message and exit 2, instead of a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ValindError as e:
            err.print(f"[bold red]error:[/] {e}", highlight=False, markup=True, soft_wrap=True)
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]


def _version(value: bool) -> None:
    if value:
        out.print(f"valind {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")] = False,
) -> None:
    """Induce values into language models from preference data and measure the side effects."""


def _progress_factory(progress: Progress) -> Callable[[str, int | None], Callable[[int], None]]:
    def start(description: str, total: int | None) -> Callable[[int], None]:
        task = progress.add_task(description, total=total)
        return lambda position: progress.update(task, completed=position)

    return start


def _progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        TimeRemainingColumn(), console=err, transient=False, disable=not err.is_terminal,
    )


def _load(config: Path | None, overrides: list[str] | None, workspace: Path | None = None) -> dict[str, Any]:
    """Config data: the given file; else the config the workspace last ran with; else the defaults."""
    if config:
        data = load_config_data(config)
    elif workspace is not None and Workspace(workspace).manifest.is_file():
        data = (Workspace(workspace).read_manifest() or {}).get("config", {})  # refuses a manifest edited by hand
    else:
        data = {}
    return apply_overrides(data, overrides or [])


def _config(config: Path | None, overrides: list[str] | None, workspace: Path | None = None) -> Config:
    origin = str(config) if config else ("workspace config" if workspace is not None else "command line")
    return validate_config(_load(config, overrides, workspace), origin=origin)


def print_ingest_summary(sources: list[dict[str, Any]], skipped: bool, report: Path) -> None:
    table = Table(title="ingest" + (" (up to date, nothing to do)" if skipped else ""), title_justify="left")
    table.add_column("source", overflow="fold")
    table.add_column("adapter")
    for col in ("read", "kept", "rejected", "duplicates"):
        table.add_column(col, justify="right")
    for s in sources:
        dupes = s["duplicates_within_source"] + s["duplicates_across_sources"]
        table.add_row(s["name"], s["adapter"], f"{s['rows_read']:,}", f"{s['pairs_kept']:,}", f"{s['rows_rejected']:,}", f"{dupes:,}")
    out.print(table)
    for s in sources:
        if s["rejected"]:
            reasons = ", ".join(f"{k} {v:,}" for k, v in s["rejected"].items())
            out.print(f"rejected in {s['name']}: {reasons}", soft_wrap=True, highlight=False)
    out.print(f"report: {report}", soft_wrap=True, highlight=False)


@app.command()
@_friendly_errors
def ingest(
    workspace: WorkspaceOpt,
    source: Annotated[str | None, typer.Argument(help="Local file or folder, or Hub dataset name; default: the config's sources.")] = None,
    adapter: Annotated[str, typer.Option("--adapter", "-a", help="Dataset adapter (auto: detect from the data).")] = "auto",
    name: Annotated[str | None, typer.Option(help="Source name in the workspace.")] = None,
    split: Annotated[str, typer.Option(help="Split of a Hub dataset or folder.")] = "train",
    subset: Annotated[str | None, typer.Option(help="Hub dataset configuration name.")] = None,
    data_dir: Annotated[str | None, typer.Option(help="Folder inside a Hub dataset.")] = None,
    revision: Annotated[str | None, typer.Option(help="Hub dataset revision to pin.")] = None,
    limit: Annotated[int | None, typer.Option(help="Read at most this many records.")] = None,
    option: Annotated[list[str] | None, typer.Option("--option", "-o", help="Adapter option KEY=VALUE (repeatable), e.g. preference=safer.")] = None,
    strict: Annotated[bool | None, typer.Option("--strict/--lenient", help="Stop at the first bad record (default: lenient, count it).")] = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Read preference data into the canonical pair table (ingest/<source>.parquet)."""
    data = _load(config, set_, workspace)
    ingest_section = data.setdefault("ingest", {})
    if source is not None:
        if Path(source).expanduser().exists():  # record local inputs by absolute path in the manifest
            source = str(Path(source).expanduser().resolve())
        options = apply_overrides({}, option or [])
        ingest_section["sources"] = [{
            "path": source, "adapter": adapter, "name": name, "split": split, "subset": subset,
            "data_dir": data_dir, "revision": revision, "limit": limit, "options": options,
        }]
    if strict is not None:
        ingest_section["strict"] = strict
    cfg = validate_config(data, origin=str(config) if config else "command line")
    _run_stages(cfg, Workspace(workspace), [Stage.INGEST], set(), 0.0)


def _ingest(cfg: Config, ws: Workspace) -> None:
    with _progress() as progress:
        result = run_ingest(cfg, ws, _progress_factory(progress))
    print_ingest_summary(result.sources, result.skipped, result.report_path)


@app.command()
@_friendly_errors
def demo(
    workspace: Annotated[Path, typer.Option("--workspace", "-w", help="Workspace folder.")] = Path("valind-demo"),
    set_: SetOpt = None,
    wait: WaitOpt = 0.0,
) -> None:
    """The main job on the embedded defaults, offline: `valind run` on the shipped demo config (data -> report)."""
    cfg = validate_config(_load(demo_config_path(), set_), origin=str(demo_config_path()))
    _run_stages(cfg, Workspace(workspace), list(STAGES), set(), wait)


@app.command("run")
@_friendly_errors
def run_command(
    workspace: WorkspaceOpt,
    config: Annotated[Path | None, typer.Argument(help="YAML config file (default: the config the workspace last ran with).")] = None,
    from_: Annotated[str | None, typer.Option("--from", help=f"Start at this stage and redo it and every later one ({', '.join(STAGES)}).")] = None,
    only: Annotated[list[str] | None, typer.Option("--only", help="Run (and redo) only this stage (repeatable).")] = None,
    set_: SetOpt = None,
    wait: WaitOpt = 0.0,
    config_opt: Annotated[Path | None, typer.Option("--config", "-c", help="YAML config file (same as the CONFIG argument).")] = None,
) -> None:
    """Run the whole study: ingest, extract, subsets, train, generate, evaluate, report; finished work is skipped.

    Stages named by --from / --only are redone (cached model calls and finished training cells are reused)."""
    if config and config_opt and config != config_opt:
        raise ValindError(f"two configs given ({config} and -c {config_opt}); give one")
    stages, force = stages_to_run(from_, only or [])
    cfg = _config(config or config_opt, set_, workspace)
    _run_stages(cfg, Workspace(workspace), stages, force, wait)


@app.command()
@_friendly_errors
def status(workspace: WorkspaceOpt) -> None:
    """What is done, running, failed and pending in a workspace, per stage and per cell."""
    from valind.pipeline import workspace_status

    ws = Workspace(workspace)
    if not ws.root.is_dir():
        raise ValindError(f"no workspace at {ws.root}")
    st = workspace_status(ws)
    out.print(f"workspace: {st.workspace}" + (f" (in use: {st.lock.describe()})" if st.lock else ""), highlight=False, soft_wrap=True)
    colours = {"done": "green", "running": "cyan", "pending": "white", "outdated": "yellow", "damaged": "red",
               "failed": "red", "interrupted": "yellow"}
    table = Table(title="stages", title_justify="left")
    for col in ("stage", "state", "finished", "detail"):
        table.add_column(col, overflow="fold")
    for s in st.stages:
        table.add_row(s.stage.value, f"[{colours.get(s.state, 'white')}]{s.state}[/]", s.finished_at or "", s.detail)
    out.print(table)
    if st.train_cells:
        counts = {state: sum(1 for _, x in st.train_cells if x == state) for state in dict.fromkeys(x for _, x in st.train_cells)}
        out.print("training cells: " + ", ".join(f"{n} {state}" for state, n in counts.items()), highlight=False)
        for cell_id, state in st.train_cells:
            if state != "done":
                out.print(f"  {state:8} {cell_id}", highlight=False)
    if st.model_cells:
        cells = Table(title="model cells", title_justify="left")
        for col in ("cell", "generated suites", "evaluated"):
            cells.add_column(col, overflow="fold")
        for c in st.model_cells:
            cells.add_row(c.label, ", ".join(c.generated) or "-", "yes" if c.evaluated else "no")
        out.print(cells)


@app.command("export")
@_friendly_errors
def export_command(
    workspace: WorkspaceOpt,
    values: Annotated[str | None, typer.Option("--values", help="Comma-separated values to export (default: every subset).")] = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Write the value subsets as Hub-ready datasets and the adapters with model cards (export/)."""
    from valind.export import run_export
    from valind.pipeline import workspace_lock

    cfg = _config(config, set_, workspace)
    ws = Workspace(workspace)
    with workspace_lock(ws):
        result = run_export(cfg, ws, [v.strip() for v in values.split(",")] if values else None)
    out.print(f"{len(result.datasets)} datasets, {len(result.adapters)} adapters in {ws.export_dir}; index: {result.index}",
              highlight=False, soft_wrap=True)


def _run_stages(cfg: Config, ws: Workspace, stages: list[Stage], force: set[Stage], wait: float) -> None:
    """The pipeline with this CLI's stage functions (progress bars and summary tables)."""
    from valind.pipeline import run_pipeline

    runners = {Stage.INGEST: _ingest, Stage.EXTRACT: _extract, Stage.SUBSETS: _subsets, Stage.TRAIN: _train,
               Stage.GENERATE: _generate, Stage.EVALUATE: _evaluate, Stage.REPORT: _report_stage}

    def announce(stage: Stage, index: int, total: int) -> None:
        if total > 1:
            out.rule(f"[bold]{index}/{total} {stage.value}", align="left")

    result = run_pipeline(cfg, ws, stages, force=force, runners=runners, wait_s=wait, on_stage=announce)
    if len(stages) > 1:
        took = ", ".join(f"{s.value} {result.seconds[s]:.0f} s" for s in stages)
        out.print(f"done in {sum(result.seconds.values()):.0f} s ({took})", highlight=False, soft_wrap=True)
        out.print(f"workspace: {ws.root}", highlight=False, soft_wrap=True)
    if Stage.REPORT in stages:
        out.print(f"report: {ws.report_index}", highlight=False, soft_wrap=True)


def _report_stage(cfg: Config, ws: Workspace) -> None:
    from valind.report import build_report

    with _progress() as progress:
        result = build_report(cfg, ws, _progress_factory(progress))
    if result.skipped:
        out.print("report (up to date, nothing to do)", highlight=False)
    for why in result.missing.values():
        out.print(f"  {why}", highlight=False, soft_wrap=True, markup=False)
    out.print(f"{len(result.figures)} figures, {len(result.tables)} tables", highlight=False)


ExtractorOpt = Annotated[str | None, typer.Option("--extractor", "-e", help="Extractor backend: embedded, hf, vllm, openai, fake.")]
ModelOpt = Annotated[str | None, typer.Option("--model", "-m", help="Model for hf / vllm / openai extractors.")]
BaseUrlOpt = Annotated[str | None, typer.Option("--base-url", help="openai extractor: server URL, e.g. http://127.0.0.1:8000/v1.")]


def _extract_overrides(extractor: str | None, model: str | None, base_url: str | None) -> list[str]:
    given = {"extract.extractor": extractor, "extract.model": model, "extract.base_url": base_url}
    return [f"{k}={v}" for k, v in given.items() if v is not None]


@app.command()
@_friendly_errors
def extract(
    workspace: WorkspaceOpt,
    extractor: ExtractorOpt = None,
    model: ModelOpt = None,
    base_url: BaseUrlOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Find the values every chosen and rejected response expresses (extract/<extractor-id>/)."""

    overrides = [*(set_ or []), *_extract_overrides(extractor, model, base_url)]
    cfg = _config(config, overrides, workspace)
    _run_stages(cfg, Workspace(workspace), [Stage.EXTRACT], set(), 0.0)


def _extract(cfg: Config, ws: Workspace) -> None:
    from valind.extract.stage import run_extract

    with _progress() as progress:
        result = run_extract(cfg, ws, _progress_factory(progress))
    print_extract_summary(result.report, result.skipped, result.report_path)


def print_extract_summary(report: dict[str, Any], skipped: bool, path: Path) -> None:
    title = f"extract {report['extractor_id']}" + (" (up to date, nothing to do)" if skipped else "")
    table = Table(title=title, title_justify="left")
    for col in ("responses", "unique", "reused from cache", "model calls", "failed"):
        table.add_column(col, justify="right")
    failed = sum(report["failed"].values())
    table.add_row(*(f"{n:,}" for n in (report["responses"], report["unique_responses"], report["reused_from_cache"],
                                         report["model_calls"], failed)))
    out.print(table)
    top = ", ".join(f"{k} {v:,}" for k, v in list(report["per_value"].items())[:15]) or "none"
    out.print(f"responses per value: {top}", soft_wrap=True, highlight=False)
    if report["unmapped_total"]:
        out.print(f"unmapped free-text values: {report['unmapped_total']:,} (top: {', '.join(report['unmapped_top'])})", soft_wrap=True)
    out.print(f"report: {path}", soft_wrap=True, highlight=False)


@app.command()
@_friendly_errors
def subsets(
    workspace: WorkspaceOpt,
    suggest: Annotated[bool, typer.Option("--suggest", help="List every value with its counts and whether it meets the criteria; write nothing.")] = False,
    min_pairs: Annotated[int | None, typer.Option(help="Minimum pairs per value (default 500, as in the study).")] = None,
    include: Annotated[str | None, typer.Option(help="Comma-separated values to keep (only these).")] = None,
    exclude: Annotated[str | None, typer.Option(help="Comma-separated values to drop.")] = None,
    heldout: Annotated[float | None, typer.Option(help="Fraction of prompts held out per value (split by prompt).")] = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Carve one DPO training set per value out of the extracted pairs (subsets/<value>.parquet)."""
    from valind.subsets import format_table
    from valind.subsets import suggest as suggest_values

    given = {"subsets.min_pairs": min_pairs, "subsets.heldout_fraction": heldout,
             "subsets.include": f"[{include}]" if include else None, "subsets.exclude": f"[{exclude}]" if exclude else None}
    overrides = [*(set_ or []), *(f"{k}={v}" for k, v in given.items() if v is not None)]
    cfg = _config(config, overrides, workspace)
    ws = Workspace(workspace)
    if suggest:
        out.print(format_table(suggest_values(cfg, ws), title="candidate values ('selected' = meets min_pairs, valence and category)"))
        return
    _run_stages(cfg, ws, [Stage.SUBSETS], set(), 0.0)


def _subsets(cfg: Config, ws: Workspace) -> None:
    from valind.subsets import format_table, run_subsets

    with _progress() as progress:
        result = run_subsets(cfg, ws, _progress_factory(progress))
    title = "subsets" + (" (up to date, nothing to do)" if result.skipped else "")
    out.print(format_table(result.stats, title=title))
    out.print(f"{len(result.selected)} value subsets in {ws.subsets_dir}; table: {result.stats_path}", soft_wrap=True, highlight=False)


@app.command()
@_friendly_errors
def train(
    workspace: WorkspaceOpt,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the cells, which are done, and the work estimate; train nothing.")] = False,
    executor: Annotated[str | None, typer.Option(help="local (default, one cell after another) or slurm (a submitit job array).")] = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Induce each value into each model: DPO, DPO + system prompt, SFT or a system prompt (train/)."""
    overrides = [*(set_ or []), *([f"train.executor={executor}"] if executor else [])]
    cfg = _config(config, overrides, workspace)
    if dry_run:
        _train(cfg, Workspace(workspace), dry_run)
    else:
        _run_stages(cfg, Workspace(workspace), [Stage.TRAIN], set(), 0.0)


def _train(cfg: Config, ws: Workspace, dry_run: bool = False) -> None:
    from valind.train import format_plan, run_train

    with _progress() as progress:
        result = run_train(cfg, ws, dry_run=dry_run, progress=_progress_factory(progress))
    out.print(format_plan(result))
    if result.reference.get("sequences"):
        ref = result.reference
        out.print(f"reference log-probs: {ref['sequences']:,} sequences, {ref['computed']:,} computed, "
                  f"{ref['from_cache']:,} from the cache (forward passes saved)", highlight=False)


@app.command()
@_friendly_errors
def generate(workspace: WorkspaceOpt, config: ConfigOpt = None, set_: SetOpt = None) -> None:
    """Answers of every model cell (base and trained) to the prompt suites (generate/<cell>/<suite>.parquet)."""
    cfg = _config(config, set_, workspace)
    _run_stages(cfg, Workspace(workspace), [Stage.GENERATE], set(), 0.0)


def _generate(cfg: Config, ws: Workspace) -> None:
    from valind.generate import run_generate

    with _progress() as progress:
        result = run_generate(cfg, ws, _progress_factory(progress))
    s = result.summary()
    title = "generate" + (" (up to date, nothing to do)" if result.skipped else "")
    table = Table(title=title, title_justify="left")
    for col in ("cells", "files", "answers", "model calls", "reused from cache", "failed"):
        table.add_column(col, justify="right")
    table.add_row(*(f"{n:,}" for n in (s["cells"], s["files"], s["rows"], s["model_calls"], s["reused_from_cache"], s["failed"])))
    out.print(table)
    for nf in result.not_finished:
        out.print(f"left out (training not finished, {nf.state}): {nf.train_id}", highlight=False)


@app.command()
@_friendly_errors
def evaluate(workspace: WorkspaceOpt, config: ConfigOpt = None, set_: SetOpt = None) -> None:
    """Crosstalk, refusal, over-refusal, anthropomorphic / validating language and QA per model (evaluate/)."""
    cfg = _config(config, set_, workspace)
    _run_stages(cfg, Workspace(workspace), [Stage.EVALUATE], set(), 0.0)


def _evaluate(cfg: Config, ws: Workspace) -> None:
    from valind.evaluate import run_evaluate

    with _progress() as progress:
        result = run_evaluate(cfg, ws, _progress_factory(progress))
    table = Table(title="evaluate" + (" (up to date, nothing to do)" if result.skipped else ""), title_justify="left")
    for col in ("cell", "refusal", "over-refusal", "anthropomorphic", "validating"):
        table.add_column(col)
    for label, m in result.summary["cells"].items():
        table.add_row(label, *(_fmt_rate(m.get(k)) for k in ("refusal", "over_refusal", "anthropomorphic", "validating")))
    out.print(table)
    for group, ct in result.summary["crosstalk"].items():
        significant = [c for c in ct["cells"] if c["significant"]]
        out.print(f"crosstalk {group}: {len(significant)} of {len(ct['cells'])} cells significant (q < {cfg.evaluate.alpha})", highlight=False)
    out.print(f"summary: {result.summary_path}", soft_wrap=True, highlight=False)


def _fmt_rate(m: dict[str, Any] | None) -> str:
    if not m or m.get("rate") is None:
        return "-"
    return f"{m['rate']:.2f} [{m['low']:.2f}, {m['high']:.2f}] n={m['n']}"


score_app = typer.Typer(help="Score any responses from a JSONL file (no workspace needed).", no_args_is_help=True)
app.add_typer(score_app, name="score")


@score_app.command("values")
@_friendly_errors
def score_values(
    input: Annotated[Path, typer.Argument(help="JSONL: each line has 'response' and optionally 'prompt' (string or chat messages).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Output JSONL: each input line plus 'values' and 'value_scores'.")],
    extractor: ExtractorOpt = None,
    model: ModelOpt = None,
    base_url: BaseUrlOpt = None,
    lenient: Annotated[bool, typer.Option("--lenient", help="Write an 'error' field for a bad line instead of stopping.")] = False,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Which values each response expresses; lines keep their order."""
    from valind.extract.score import score_values_file

    overrides = [*(set_ or []), *_extract_overrides(extractor, model, base_url)]
    cfg = _config(config, overrides)
    with _progress() as progress:
        summary = score_values_file(cfg, input, output, lenient=lenient, progress=_progress_factory(progress))
    out.print(f"{summary['lines']:,} lines scored ({summary['reused']:,} from cache, {summary['errors']:,} errors) -> {output}", highlight=False)


@score_app.command("quality")
@_friendly_errors
def score_quality(
    labels: Annotated[Path | None, typer.Option("--labels", help="Labelled JSONL (response, values); default: the shipped eval set.")] = None,
    extractor: ExtractorOpt = None,
    model: ModelOpt = None,
    base_url: BaseUrlOpt = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write the figures as JSON here.")] = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Precision and recall of an extractor on labelled responses, per value and micro-averaged."""
    from valind.extract.quality import evaluate_extractor
    from valind.stats import Proportion
    from valind.workspace import atomic_write_json

    overrides = [*(set_ or []), *_extract_overrides(extractor, model, base_url)]
    cfg = _config(config, overrides)
    result = evaluate_extractor(cfg, labels)
    table = Table(title=f"extractor quality on {result['labels']} ({result['responses']} responses, 95% Wilson intervals)", title_justify="left")
    for col in ("value", "precision", "recall"):
        table.add_column(col)
    for name, row in [*result["per_value"].items(), ("micro", result["micro"])]:
        table.add_row(name, Proportion(**row["precision"]).fmt(), Proportion(**row["recall"]).fmt())
    out.print(table)
    if result["failed"]:
        out.print(f"{result['failed']} responses failed extraction and count as predicting nothing")
    if json_out:
        atomic_write_json(json_out, result)


JudgeOpt = Annotated[str, typer.Option("--judge", "-j", help="rules (offline default), llm (a chat model as judge: set -e/-m), fake.")]


def _judges(labels: list[str], judge: str, cfg: Config) -> list[Any]:
    """One judge per label; an llm judge talks to the extractor backend the options name (json_schema off)."""
    from valind.judges import make_judge

    options: dict[str, Any] = {}
    if judge == "llm":
        from valind.extract import make_extractor
        from valind.extract.stage import vocabulary

        ecfg = cfg.extract.model_copy(update={"json_schema": False})
        options["backend"] = make_extractor(ecfg, vocabulary(ecfg), cfg.resolved_cache_dir())
    return [make_judge(label, judge, **options) for label in labels]


def _score_with_judges(labels: list[str], input: Path, output: Path, judge: str, lenient: bool,
                       extractor: str | None, model: str | None, base_url: str | None, config: Path | None,
                       set_: list[str] | None) -> None:
    from valind.cache import Cache
    from valind.judges.base import Label
    from valind.judges.score import score_file

    overrides = [*(set_ or []), *_extract_overrides(extractor, model, base_url)]
    cfg = _config(config, overrides)
    judges = dict(zip((Label(l) for l in labels), _judges(labels, judge, cfg)))
    with Cache(cfg.resolved_cache_dir() / "calls.sqlite") as cache, _progress() as progress:
        summary = score_file(judges, input, output, lenient, cache=cache, progress=_progress_factory(progress))
    out.print(f"{summary['lines']:,} lines scored ({summary['reused']:,} from cache, {summary['errors']:,} errors) -> {output}",
              highlight=False)


InputArg = Annotated[Path, typer.Argument(help="JSONL: each line has 'response' and optionally 'prompt' (string or chat messages).")]
LenientOpt = Annotated[bool, typer.Option("--lenient", help="Write an 'error' field for a bad line instead of stopping.")]


@score_app.command("refusal")
@_friendly_errors
def score_refusal(
    input: InputArg,
    output: Annotated[Path, typer.Option("--output", "-o", help="Output JSONL: each input line plus 'refusal' and 'refusal_score'.")],
    judge: JudgeOpt = "rules",
    extractor: ExtractorOpt = None,
    model: ModelOpt = None,
    base_url: BaseUrlOpt = None,
    lenient: LenientOpt = False,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Does each response refuse? (full and partial refusals count; see docs/judges.md)."""
    _score_with_judges(["refusal"], input, output, judge, lenient, extractor, model, base_url, config, set_)


@score_app.command("anthropomorphism")
@_friendly_errors
def score_anthropomorphism(
    input: InputArg,
    output: Annotated[Path, typer.Option("--output", "-o", help="Output JSONL: each input line plus 'anthropomorphic', 'validating' and their scores.")],
    judge: JudgeOpt = "rules",
    extractor: ExtractorOpt = None,
    model: ModelOpt = None,
    base_url: BaseUrlOpt = None,
    lenient: LenientOpt = False,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Anthropomorphic (human-like self-presentation) and validating (unwarranted praise or agreement) language."""
    _score_with_judges(["anthropomorphic", "validating"], input, output, judge, lenient, extractor, model, base_url, config, set_)


@score_app.command("judges-check")
@_friendly_errors
def score_judges_check(
    shared_dir: Annotated[Path, typer.Option(help="Folder with xstest/labelled_completions/.")] = Path("../shared/data"),
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write the figures as JSON here.")] = None,
) -> None:
    """Accuracy of the offline judges on human-labelled data (XSTest completions; the anthro eval set)."""
    from valind.judges.validate import main as validate_main

    argv = ["--shared-dir", str(shared_dir), *(["--json", str(json_out)] if json_out else [])]
    raise typer.Exit(validate_main(argv))


from valind.validate.cli import validate_app  # noqa: E402 - the sub-app reads this module's helpers lazily
app.add_typer(validate_app, name="validate")


@app.command()
@_friendly_errors
def report(workspace: WorkspaceOpt, config: ConfigOpt = None, set_: SetOpt = None) -> None:
    """One self-contained HTML page of a workspace's results (report/index.html, figures/*.png, tables/*.csv)."""
    cfg = _config(config, set_, workspace)
    ws = Workspace(workspace)
    if not ws.root.is_dir():
        raise ValindError(f"no workspace at {ws.root}")
    _run_stages(cfg, ws, [Stage.REPORT], set(), 0.0)


def run() -> None:  # pragma: no cover - console entry for ``python -m valind``
    app(prog_name="valind")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(run())
