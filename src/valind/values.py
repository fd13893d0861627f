"""The value vocabulary: which values the tool looks for, and how free text maps onto them.

A vocabulary is a list of values, each with a name, a definition written for the project,
a valence (positive / negative / neutral), a top-level category of the AI values taxonomy
(Practical, Epistemic, Social, Protective, Personal) and aliases. The default (15 values:
the study's list plus four) ships in ``valind/data/values/default.yaml``. Other sources:

- any YAML file of the same shape (for example the ten Schwartz values);
- the AI values taxonomy ("Values in the Wild"): a folder with ``l1_lookup.json``,
  ``l2_lookup.json``, ``l3_lookup.json``, ``l1_to_l2.json``, ``l2_to_l3.json``, or the Hub
  dataset's ``values_tree.csv``; level-1 (or level-2) clusters become the values, their
  top-level ancestor their category, valence neutral (the taxonomy has none).
"""

from __future__ import annotations

import csv
import re
from enum import StrEnum
from functools import cached_property
from pathlib import Path
from typing import Any

import orjson
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from valind.errors import ConfigError, InputError
from valind.workspace import hash_json

DEFAULT_VOCABULARY = Path(__file__).resolve().parent / "data" / "values" / "default.yaml"
CATEGORIES = ("Practical", "Epistemic", "Social", "Protective", "Personal")
_NON_WORD = re.compile(r"[^a-z0-9]+")


class Valence(StrEnum):
    POSITIVE = "positive"
    NEGATIVE = "negative"
    NEUTRAL = "neutral"


def normalise(term: str) -> str:
    """Lower case, punctuation and repeated spaces folded: 'Legal-Awareness!' -> 'legal awareness'."""
    return _NON_WORD.sub(" ", term.lower()).strip()


class Value(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = Field(description="Canonical name, lower case (e.g. 'legal awareness').")
    definition: str = Field(description="What it means for a response to actively express this value.")
    valence: Valence = Field(Valence.NEUTRAL, description="positive, negative or neutral.")
    category: str = Field(description=f"Top-level taxonomy category: one of {', '.join(CATEGORIES)}.")
    aliases: tuple[str, ...] = Field((), description="Other words for it, used to map free-text extractor output.")

    @field_validator("category")
    @classmethod
    def _known_category(cls, v: str) -> str:
        if v not in CATEGORIES:
            raise ValueError(f"must be one of {', '.join(CATEGORIES)}")
        return v

    @field_validator("name")
    @classmethod
    def _plain_name(cls, v: str) -> str:
        if not v.strip() or normalise(v) != v:
            raise ValueError(f"must be lower case words separated by single spaces, e.g. {normalise(v)!r}")
        return v


class Vocabulary(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    description: str = ""
    values: tuple[Value, ...]

    @field_validator("values")
    @classmethod
    def _unique(cls, values: tuple[Value, ...]) -> tuple[Value, ...]:
        seen: dict[str, str] = {}
        for v in values:
            for term in (v.name, *map(normalise, v.aliases)):
                if term in seen and seen[term] != v.name:
                    raise ValueError(f"{term!r} names both {seen[term]!r} and {v.name!r}")
                seen[term] = v.name
        if not values:
            raise ValueError("a vocabulary needs at least one value")
        return values

    @property
    def names(self) -> list[str]:
        return [v.name for v in self.values]

    @cached_property
    def by_name(self) -> dict[str, Value]:
        return {v.name: v for v in self.values}

    @cached_property
    def _terms(self) -> dict[str, str]:
        terms = {normalise(a): v.name for v in self.values for a in v.aliases}
        terms.update({v.name: v.name for v in self.values})
        return terms

    def lookup(self, term: str) -> str | None:
        """The value a free-text term names exactly or by alias (after ``normalise``), else None."""
        return self._terms.get(normalise(term))

    @cached_property
    def fingerprint(self) -> str:
        """Hash of the whole vocabulary: part of every extractor's cache key."""
        return hash_json(self.model_dump(mode="json"))


def load_vocabulary(source: str | Path | None = None, level: int = 1) -> Vocabulary:
    """Load a vocabulary: None for the default, a YAML file, a taxonomy folder or ``values_tree.csv``."""
    path = Path(source) if source is not None else DEFAULT_VOCABULARY
    if not path.exists():
        raise ConfigError(f"value vocabulary not found: {path}")
    if path.is_dir():
        return _from_taxonomy_json(path, level)
    if path.suffix == ".csv":
        return _from_values_tree_csv(path, level)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        return Vocabulary.model_validate(data)
    except yaml.YAMLError as err:
        raise InputError(f"not valid YAML: {err}", file=str(path)) from None
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(map(str, first["loc"]))
        raise InputError(first["msg"], file=str(path), field=where) from None


def _category(l3_name: str) -> str:
    """'Epistemic values' -> 'Epistemic'."""
    word = l3_name.split()[0].capitalize()
    if word not in CATEGORIES:
        raise InputError(f"unknown top-level category {l3_name!r}")
    return word


def _taxonomy_values(nodes: dict[str, dict[str, Any]], parent: dict[str, str], top: dict[str, str], level: int) -> list[Value]:
    """Turn taxonomy nodes of one level into values; ``top`` maps each node id to its level-3 name."""
    values = []
    for node_id, node in nodes.items():
        values.append(Value(name=normalise(node["name"]), definition=node.get("description", ""),
                            category=_category(top[node_id]), valence=Valence.NEUTRAL))
    return sorted(values, key=lambda v: v.name)


def _read_json(path: Path) -> Any:
    try:
        return orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError) as err:
        raise InputError(f"cannot read taxonomy file: {err}", file=str(path)) from None


def _from_taxonomy_json(folder: Path, level: int) -> Vocabulary:
    if level not in (1, 2):
        raise ConfigError("taxonomy level must be 1 (266 clusters) or 2 (26 clusters)")
    l3 = _read_json(folder / "l3_lookup.json")
    l2_to_l3 = _read_json(folder / "l2_to_l3.json")
    nodes = _read_json(folder / f"l{level}_lookup.json")
    if level == 1:
        l1_to_l2 = _read_json(folder / "l1_to_l2.json")
        top = {n: l3[l2_to_l3[l1_to_l2[n]]]["name"] for n in nodes}
    else:
        top = {n: l3[l2_to_l3[n]]["name"] for n in nodes}
    values = _taxonomy_values(nodes, {}, top, level)
    return Vocabulary(name=f"values-in-the-wild-l{level}", description=f"AI values taxonomy, level {level}", values=tuple(values))


def _from_values_tree_csv(path: Path, level: int) -> Vocabulary:
    """``values_tree.csv`` of ``Anthropic/values-in-the-wild``: cluster_id, name, description, level, parent_cluster_id."""
    with path.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    required = {"cluster_id", "name", "description", "level", "parent_cluster_id"}
    if not rows or not required <= set(rows[0]):
        raise InputError(f"expected columns {sorted(required)}", file=str(path))
    by_id = {r["cluster_id"]: r for r in rows}

    def root(node_id: str) -> str:
        node = by_id[node_id]
        while node["level"] != "3":
            node = by_id[node["parent_cluster_id"]]
        return node["name"]

    nodes = {r["cluster_id"]: r for r in rows if r["level"] == str(level)}
    top = {n: root(n) for n in nodes}
    values = _taxonomy_values(nodes, {}, top, level)
    return Vocabulary(name=f"values-in-the-wild-l{level}", description=f"AI values taxonomy, level {level}", values=tuple(values))
