"""The subsets stage: the XOR / flip rule, failed extractions, selection criteria, held-out split,
outputs (TRL conversational form, stats, overlap, report), determinism, skipping, suggest."""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import xxhash
from rich.console import Console

from valind.config import Config, demo_config_path, load_config, validate_config
from valind.errors import ConfigError, ValindError
from valind.extract.fake import FakeExtractor
from valind.extract.base import Item
from valind.extract.stage import PAIRS_SCHEMA, VALUES_SCHEMA, extractor_id, run_extract, vocabulary
from valind.ingest import run_ingest
from valind.schema import PAIR_SCHEMA, pair_id
from valind.subsets import Reason, format_table, run_subsets, suggest
from valind.workspace import Workspace, atomic_write_json, hash_file, read_json


# ---------------------------------------------------------------- hand-made workspaces


@dataclass
class P:
    """One hand-made pair with the values of its two responses. A status other than "ok" marks a
    failed extraction; "missing" leaves the response out of values.parquet altogether."""

    prompt: str
    chosen: str
    rejected: str
    plus: tuple[str, ...] = ()
    minus: tuple[str, ...] = ()
    status_chosen: str = "ok"
    status_rejected: str = "ok"
    source: str = "alpha"
    system: str | None = None

    @property
    def messages(self) -> list[dict[str, str]]:
        system = [{"role": "system", "content": self.system}] if self.system else []
        return [*system, {"role": "user", "content": self.prompt}]

    @property
    def id(self) -> str:
        return pair_id(self.messages, self.chosen, self.rejected)


def response_id(text: str) -> str:
    return xxhash.xxh3_128_hexdigest(text.encode())


def config(**subsets: Any) -> Config:
    return validate_config({"extract": {"extractor": "fake"}, "subsets": {"min_pairs": 1, **subsets}})


def build(root: Path, pairs: list[P], reverse_pairs_file: bool = False) -> Workspace:
    """Write ingest/<source>.parquet, extract/<id>/{values,pairs}.parquet + report, and both stage
    records, as the real stages would (``reverse_pairs_file``: pairs.parquet in another order)."""
    ws = Workspace(root)
    sources = sorted({p.source for p in pairs})
    inputs, ordered = {}, []
    for source in sources:
        rows = [p for p in pairs if p.source == source]
        ordered += rows
        table = pa.Table.from_pylist(
            [{"pair_id": p.id, "source": source, "prompt": p.messages, "chosen": p.chosen, "rejected": p.rejected, "meta": "{}"}
             for p in rows], schema=PAIR_SCHEMA)
        path = ws.ingest_file(source)
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, path)
        inputs[str(path.relative_to(ws.root))] = hash_file(path)
    ws.record_stage("ingest", "test", [ws.ingest_file(s) for s in sources], {})

    ext_id = extractor_id(config().extract)
    out = ws.extract_dir(ext_id)
    out.mkdir(parents=True, exist_ok=True)
    values: dict[str, dict[str, Any]] = {}
    for p in ordered:
        for text, vals, status in ((p.chosen, p.plus, p.status_chosen), (p.rejected, p.minus, p.status_rejected)):
            if status != "missing":
                values[response_id(text)] = {"response_id": response_id(text), "values": sorted(vals) if status == "ok" else [],
                                             "scores": None, "raw": "", "status": status, "error": None, "unmapped": []}
    pq.write_table(pa.Table.from_pylist(list(values.values()), schema=VALUES_SCHEMA), out / "values.parquet")
    pair_rows = [{"pair_id": p.id, "source": p.source, "chosen_id": response_id(p.chosen), "rejected_id": response_id(p.rejected)}
                 for p in ordered]
    pq.write_table(pa.Table.from_pylist(pair_rows[::-1] if reverse_pairs_file else pair_rows, schema=PAIRS_SCHEMA), out / "pairs.parquet")
    atomic_write_json(out / "extract_report.json", {"extractor_id": ext_id, "inputs": inputs})
    ws.record_stage(f"extract/{ext_id}", "test", [out / "values.parquet", out / "pairs.parquet", out / "extract_report.json"], {})
    return ws


def rows(path: Path) -> list[dict[str, Any]]:
    return pq.read_table(path).to_pylist()


def by_value(result: Any) -> dict[str, Any]:
    return {c.value: c for c in result.stats}


RULE_CASES = [
    P("both", "I care, with empathy.", "Empathy from me too.", plus=("empathy",), minus=("empathy",)),
    P("neither", "Here is a joke.", "No.", plus=("humor",)),
    P("only chosen", "Empathy and honesty.", "Just honesty.", plus=("empathy", "honesty"), minus=("honesty",)),
    P("only rejected", "Plain answer.", "So much empathy.", minus=("empathy",), system="Be brief."),
    # failures: were a failure read as "no values", each of these would land in the humor subset
    P("chosen failed", "Broken output.", "A joke!", minus=("humor",), status_chosen="error"),
    P("rejected failed", "A pun!", "Broken output 2.", plus=("humor",), status_rejected="parse_error"),
    P("both failed", "x1", "x2", status_chosen="error", status_rejected="error"),
    P("missing row", "A gag!", "Not scored.", plus=("humor",), status_rejected="missing"),
]


# ---------------------------------------------------------------- the rule


def test_xor_rule_flip_and_failed_extractions(tmp_path: Path) -> None:
    ws = build(tmp_path / "ws", RULE_CASES)
    result = run_subsets(config(), ws)
    ids = {p.prompt: p.id for p in RULE_CASES}

    empathy = {r["pair_id"]: r for r in rows(result.train["empathy"])}
    assert set(empathy) == {ids["only chosen"], ids["only rejected"]}  # on both sides or neither: excluded
    kept = empathy[ids["only chosen"]]
    assert not kept["flipped"]
    assert kept["chosen"] == [{"role": "assistant", "content": "Empathy and honesty."}]
    assert kept["rejected"] == [{"role": "assistant", "content": "Just honesty."}]
    swapped = empathy[ids["only rejected"]]
    assert swapped["flipped"]
    assert swapped["chosen"] == [{"role": "assistant", "content": "So much empathy."}]  # the response expressing it wins
    assert swapped["rejected"] == [{"role": "assistant", "content": "Plain answer."}]
    assert swapped["prompt"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "only rejected"}]

    assert [r["pair_id"] for r in rows(result.train["humor"])] == [ids["neither"]]  # failures are in no subset
    stats = by_value(result)
    assert (stats["empathy"].chosen_side, stats["empathy"].rejected_side, stats["empathy"].total) == (1, 1, 2)
    assert (stats["humor"].chosen_side, stats["humor"].rejected_side) == (1, 0)
    assert stats["honesty"].total == 0 and stats["honesty"].reasons == (Reason.TOO_FEW_PAIRS,)

    report = read_json(result.report_path)
    assert report["pairs_read"] == 8 and report["pairs_used"] == 4
    assert report["excluded_failed_extraction"] == 4
    assert report["failed_extraction"] == {
        "pairs": 4, "chosen_failed_only": 1, "rejected_failed_only": 2, "both_failed": 1,
        "responses_by_status": {"error": 3, "missing": 1, "parse_error": 1},
    }
    assert report["per_value"]["empathy"]["status"] == "selected"


def test_rows_are_sorted_by_pair_id(tmp_path: Path) -> None:
    pairs = [P(f"q{i}", f"Kind words {i}.", f"Cold words {i}.", plus=("empathy",) if i % 2 else (), minus=() if i % 2 else ("empathy",))
             for i in range(30)]
    result = run_subsets(config(), build(tmp_path / "ws", pairs))
    ids = [r["pair_id"] for r in rows(result.train["empathy"])]
    assert ids == sorted(ids) and len(ids) == 30


# ---------------------------------------------------------------- outputs


def test_subset_loads_with_datasets_in_trl_conversational_form(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    result = run_subsets(config(), build(tmp_path / "ws", RULE_CASES))
    ds = datasets.load_dataset("parquet", data_files=str(result.train["empathy"]), split="train",
                               cache_dir=str(tmp_path / "hf-cache"))
    assert ds.column_names == ["prompt", "chosen", "rejected", "pair_id", "source", "flipped"]
    assert len(ds) == 2
    for example in ds:
        assert [m["role"] for m in example["prompt"]][-1] == "user"
        assert [m["role"] for m in example["chosen"]] == ["assistant"] == [m["role"] for m in example["rejected"]]
        assert isinstance(example["flipped"], bool)


def test_subset_goes_through_trl_chat_templating(tmp_path: Path) -> None:
    """TRL's own checks and chat templating (what DPOTrainer runs on conversational data), with a
    tiny word-level tokenizer built in memory: no model, no network."""
    data_utils = pytest.importorskip("trl.data_utils")
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    tokenizer = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel({"[UNK]": 0}, unk_token="[UNK]")))
    tokenizer.chat_template = ("{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}</{{ m['role'] }}>{% endfor %}"
                               "{% if add_generation_prompt %}<assistant>{% endif %}")
    result = run_subsets(config(), build(tmp_path / "ws", RULE_CASES))
    for example in rows(result.train["empathy"]):
        assert data_utils.is_conversational(example)
        text = data_utils.apply_chat_template(example, tokenizer)
        winner = example["chosen"][0]["content"]
        assert text["prompt"].endswith("</user><assistant>")
        assert text["chosen"] == f"{winner}</assistant>"


def test_stats_overlap_and_report_match_the_files(tmp_path: Path) -> None:
    pairs = [
        *[P(f"e{i}", f"Warm {i}", f"Cool {i}", plus=("empathy", "honesty"), source="alpha") for i in range(4)],
        *[P(f"h{i}", f"Frank {i}", f"Evasive {i}", minus=("honesty",), source="beta") for i in range(3)],
        P("f", "Fair", "Unfair", plus=("fairness",), minus=("honesty",), source="beta"),
    ]
    result = run_subsets(config(heldout_fraction=0.4, seed=3), build(tmp_path / "ws", pairs))
    table = list(csv.DictReader(io.StringIO(result.stats_path.read_text())))
    assert [r["value"] for r in table][:3] == ["honesty", "empathy", "fairness"]  # largest first
    assert set(table[0]) >= {"value", "valence", "category", "chosen_side", "rejected_side", "total", "heldout",
                             "status", "reason", "source:alpha", "source:beta"}
    members: dict[str, set[str]] = {}
    for r in table:
        value = r["value"]
        if r["status"] != "selected":
            assert value not in result.train
            continue
        train, held = rows(result.train[value]), rows(result.heldout[value])
        everything = train + held
        assert int(r["chosen_side"]) == sum(not x["flipped"] for x in everything)
        assert int(r["rejected_side"]) == sum(x["flipped"] for x in everything)
        assert int(r["total"]) == len(everything) and int(r["heldout"]) == len(held)
        assert int(r["source:alpha"]) + int(r["source:beta"]) == len(everything)
        assert int(r["source:alpha"]) == sum(x["source"] == "alpha" for x in everything)
        members[value] = {x["pair_id"] for x in everything}
    honesty = next(r for r in table if r["value"] == "honesty")
    assert (honesty["chosen_side"], honesty["rejected_side"], honesty["total"]) == ("4", "4", "8")

    overlap = list(csv.DictReader(io.StringIO(result.overlap_path.read_text())))
    names = sorted(members)
    assert [(r["value_a"], r["value_b"]) for r in overlap] == [(a, b) for i, a in enumerate(names) for b in names[i + 1:]]
    for r in overlap:
        assert int(r["shared"]) == len(members[r["value_a"]] & members[r["value_b"]])
    assert {(r["value_a"], r["value_b"], r["shared"]) for r in overlap} >= {("empathy", "honesty", "4"), ("fairness", "honesty", "1")}

    report = read_json(result.report_path)
    assert report["selected"] == ["empathy", "honesty", "fairness"]
    assert report["criteria"]["heldout_fraction"] == 0.4
    assert report["pairs_in_a_selected_subset"] == 8
    assert report["per_value"]["honesty"]["per_source"] == {"alpha": 4, "beta": 4}
    manifest = read_json(result.report_path.parents[1] / "manifest.json")
    assert "subsets" in manifest["stages"]


# ---------------------------------------------------------------- determinism, skipping, held-out split


def test_byte_identical_outputs_whatever_the_row_order(tmp_path: Path) -> None:
    pairs = [P(f"q{i % 7}", f"Answer {i}", f"Other {i}", plus=("empathy",) if i % 3 else ("humor",),
               minus=("humor",) if i % 4 == 0 else (), source="ab"[i % 2]) for i in range(40)]
    cfg = config(heldout_fraction=0.3)
    first = run_subsets(cfg, build(tmp_path / "one", pairs))
    second = run_subsets(cfg, build(tmp_path / "two", pairs[::-1], reverse_pairs_file=True))
    names = sorted(p.name for p in first.stats_path.parent.iterdir() if p.suffix in (".parquet", ".csv"))
    assert names == sorted(p.name for p in second.stats_path.parent.iterdir() if p.suffix in (".parquet", ".csv"))
    assert any(n.endswith(".heldout.parquet") for n in names)
    for name in names:
        assert (first.stats_path.parent / name).read_bytes() == (second.stats_path.parent / name).read_bytes(), name


def test_rerun_is_skipped_until_settings_or_inputs_change(tmp_path: Path) -> None:
    ws = build(tmp_path / "ws", RULE_CASES)
    first = run_subsets(config(), ws)
    again = run_subsets(config(), ws)
    assert again.skipped and again.stats == first.stats and again.train == first.train
    assert not run_subsets(config(min_pairs=2), ws).skipped
    assert run_subsets(config(min_pairs=2), ws).skipped
    first.report_path.parents[0].joinpath("empathy.parquet").unlink()  # a lost output is rebuilt
    assert not run_subsets(config(min_pairs=2), ws).skipped


def test_heldout_split_is_by_prompt_and_stable(tmp_path: Path) -> None:
    # 20 prompts, 4 pairs each, every pair in both the empathy and the humor subset
    pairs = [P(f"prompt {i % 20}", f"Warm reply {i}", f"Flat reply {i}", plus=("empathy",), minus=("humor",)) for i in range(80)]
    cfg = config(heldout_fraction=0.25, seed=11)
    result = run_subsets(cfg, build(tmp_path / "one", pairs))
    prompts = {p.id: p.prompt for p in pairs}
    held_prompts: set[str] = set()
    for value in ("empathy", "humor"):
        train = {r["pair_id"] for r in rows(result.train[value])}
        held = {r["pair_id"] for r in rows(result.heldout[value])}
        assert train and held and len(train | held) == 80
        assert not {prompts[i] for i in train} & {prompts[i] for i in held}  # no prompt in both files
        assert by_value(result)[value].heldout == len(held)
        held_prompts |= {prompts[i] for i in held}
    held_by_value = [{prompts[r["pair_id"]] for r in rows(result.heldout[v])} for v in ("empathy", "humor")]
    assert held_by_value[0] == held_by_value[1]  # a held-out prompt is held out for every value
    documented = {p.prompt for p in pairs  # the rule as the module docstring states it
                  if xxhash.xxh3_64_intdigest(f"user\x1f{p.prompt}".encode(), 11) < 0.25 * 2**64}
    assert held_by_value[0] == documented

    shuffled = run_subsets(cfg, build(tmp_path / "two", pairs[::-1], reverse_pairs_file=True))
    assert rows(shuffled.heldout["empathy"]) == rows(result.heldout["empathy"])
    other_seed = run_subsets(config(heldout_fraction=0.25, seed=12), build(tmp_path / "three", pairs))
    assert {r["pair_id"] for r in rows(other_seed.heldout["empathy"])} != {r["pair_id"] for r in rows(result.heldout["empathy"])}

    no_split = run_subsets(config(), build(tmp_path / "one", pairs))
    assert not no_split.heldout and not Workspace(tmp_path / "one").heldout_file("empathy").exists()  # stale file removed


# ---------------------------------------------------------------- selection


def criteria_pairs() -> list[P]:
    """empathy 3 (positive, Social), deception 2 (negative, Social), engagement 2 (neutral, Practical),
    honesty 1 (positive, Epistemic), violence 2 (negative, Protective)."""
    spec = {"empathy": 3, "deception": 2, "engagement": 2, "honesty": 1, "violence": 2}
    return [P(f"{v} {i}", f"{v} yes {i}", f"{v} no {i}", plus=(v,)) for v, n in spec.items() for i in range(n)]


def test_selection_criteria_are_each_reported(tmp_path: Path) -> None:
    ws = build(tmp_path / "ws", criteria_pairs())
    result = run_subsets(config(min_pairs=2, valences=["positive", "neutral"], categories=["Social", "Practical", "Epistemic"],
                                exclude=["engagement"]), ws)
    reasons = {c.value: c.reasons for c in result.stats}
    assert reasons["empathy"] == ()
    assert reasons["deception"] == (Reason.VALENCE,)
    assert reasons["engagement"] == (Reason.EXCLUDED,)
    assert reasons["honesty"] == (Reason.TOO_FEW_PAIRS,)
    assert reasons["violence"] == (Reason.VALENCE, Reason.CATEGORY)
    assert result.selected == ["empathy"]
    assert sorted(p.name for p in ws.subsets_dir.glob("*.parquet")) == ["empathy.parquet"]
    table = {r["value"]: r for r in csv.DictReader(io.StringIO(result.stats_path.read_text()))}
    assert (table["violence"]["status"], table["violence"]["reason"]) == ("dropped", "valence;category")
    assert read_json(result.report_path)["per_value"]["engagement"]["reasons"] == ["excluded"]

    included = run_subsets(config(include=["deception", "violence"]), ws)
    assert included.selected == ["deception", "violence"]
    assert {c.value: c.reasons for c in included.stats}["empathy"] == (Reason.NOT_INCLUDED,)
    assert sorted(p.name for p in ws.subsets_dir.glob("*.parquet")) == ["deception.parquet", "violence.parquet"]  # stale removed


def test_nothing_selected_and_unknown_value_names(tmp_path: Path) -> None:
    pairs = [*criteria_pairs(), P("odd", "Odd one", "Even one", plus=("not a value",))]
    result = run_subsets(config(min_pairs=1000), build(tmp_path / "ws", pairs))
    assert result.selected == [] and result.train == {}
    assert not list(result.stats_path.parent.glob("*.parquet"))
    assert result.overlap_path.read_text() == "value_a,value_b,shared\n"
    assert all(c.reasons == (Reason.TOO_FEW_PAIRS,) for c in result.stats)
    assert read_json(result.report_path)["unknown_values"] == {"not a value": 1}  # counted, in no subset


@pytest.mark.parametrize("setting", ["include", "exclude"])
def test_unknown_value_name_is_a_config_error_listing_the_valid_ones(tmp_path: Path, setting: str) -> None:
    ws = build(tmp_path / "ws", criteria_pairs())
    with pytest.raises(ConfigError, match=r"(?s)'empathyy'.*Did you mean 'empathy'.*Available:.*violence"):
        run_subsets(config(**{setting: ["empathyy"]}), ws)
    with pytest.raises(ConfigError, match="empathyy"):
        suggest(config(**{setting: ["empathyy"]}), ws)


def test_unknown_category_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="Socail.*Social"):
        run_subsets(config(categories=["Socail"]), build(tmp_path / "ws", criteria_pairs()))


def test_suggest_and_format_table(tmp_path: Path) -> None:
    ws = build(tmp_path / "ws", criteria_pairs())
    cfg = config(min_pairs=2, exclude=["empathy"])
    rows_ = suggest(cfg, ws)
    assert len(rows_) == len(vocabulary(cfg.extract).values)
    valences = [c.valence for c in rows_]
    assert valences == sorted(valences, key=["positive", "negative", "neutral"].index)
    positive = [c for c in rows_ if c.valence == "positive"]
    assert positive[0].value == "empathy" and positive[0].selected  # exclude is ignored by suggest
    assert [c.value for c in rows_ if c.valence == "negative"][:2] == ["deception", "violence"]
    by = {c.value: c for c in rows_}
    assert (by["deception"].chosen_side, by["deception"].rejected_side, by["deception"].total) == (2, 0, 2)
    assert by["honesty"].reasons == (Reason.TOO_FEW_PAIRS,)
    assert not ws.subsets_dir.exists()  # suggest writes nothing

    console = Console(record=True, width=200)
    console.print(format_table(rows_, title="candidates"))
    text = console.export_text()
    assert "rejected side (flipped)" in text and "too_few_pairs" in text
    deception = next(line for line in text.splitlines() if "deception" in line)
    assert re.search(r"deception\W+negative\W+Social\W+2\W+0\W+2\W+selected", deception), deception


# ---------------------------------------------------------------- missing or stale inputs


def test_missing_or_stale_extraction_tells_the_user_what_to_run(tmp_path: Path) -> None:
    ws = Workspace(tmp_path / "empty")
    with pytest.raises(ValindError, match="valind ingest"):
        run_subsets(config(), ws)
    ws = build(tmp_path / "ws", RULE_CASES)
    ws.clear_stage(f"extract/{extractor_id(config().extract)}")
    with pytest.raises(ValindError, match="valind extract"):
        run_subsets(config(), ws)

    ws = build(tmp_path / "stale", RULE_CASES)
    table = pq.read_table(ws.ingest_file("alpha")).slice(0, 3)  # re-ingested since the extraction
    pq.write_table(table, ws.ingest_file("alpha"))
    ws.record_stage("ingest", "changed", [ws.ingest_file("alpha")], {})
    with pytest.raises(ValindError, match="other ingested pairs.*valind extract"):
        run_subsets(config(), ws)


# ---------------------------------------------------------------- the real demo data


def test_demo_data_with_the_fake_extractor(tmp_path: Path) -> None:
    cfg = load_config(demo_config_path(), ["extract.extractor=fake", f"cache_dir={tmp_path / 'cache'}", "subsets.min_pairs=2",
                                           "subsets.heldout_fraction=0.2"])
    ws = Workspace(tmp_path / "ws")
    run_ingest(cfg, ws)
    run_extract(cfg, ws)
    result = run_subsets(cfg, ws)
    assert len(result.selected) >= 3
    assert read_json(result.report_path)["pairs_read"] == 240
    extractor = FakeExtractor(vocabulary(cfg.extract))
    for value in result.selected:
        table = [*rows(result.train[value]), *rows(result.heldout[value])]
        assert len(table) == by_value(result)[value].total >= 2
        for r in table:  # the rule, checked again on the written rows: v in the winner only
            winner, loser = (extractor.extract([Item(r["prompt"], r[side][0]["content"])])[0].values for side in ("chosen", "rejected"))
            assert value in winner and value not in loser
    assert run_subsets(cfg, ws).skipped
