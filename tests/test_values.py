from __future__ import annotations

from pathlib import Path

import pytest

from valind.errors import InputError
from valind.values import CATEGORIES, Valence, load_vocabulary, normalise

STUDY_VALUES = ["empathy", "creativity", "honesty", "curiosity", "fairness", "privacy", "humor", "deception",
                "violence", "engagement", "discretion", "legal awareness", "harm prevention", "respect", "clarity"]


def test_default_vocabulary_has_the_fifteen_values() -> None:
    vocab = load_vocabulary()
    assert vocab.names == STUDY_VALUES
    assert {v.name for v in vocab.values if v.valence is Valence.NEGATIVE} == {"deception", "violence"}
    assert all(v.category in CATEGORIES and v.definition and v.aliases for v in vocab.values)


def test_lookup_by_name_alias_and_spelling_variants() -> None:
    vocab = load_vocabulary()
    assert vocab.lookup("Legal-Awareness!") == "legal awareness"
    assert vocab.lookup("compassion") == "empathy"
    assert vocab.lookup("humour") == "humor"
    assert vocab.lookup("photosynthesis") is None
    assert normalise("  Harm   Prevention ") == "harm prevention"


def test_custom_yaml_vocabulary(tmp_path: Path) -> None:
    path = tmp_path / "schwartz.yaml"
    path.write_text(
        "name: schwartz\nvalues:\n"
        "  - {name: benevolence, definition: caring for others, valence: positive, category: Social, aliases: [kindness]}\n"
        "  - {name: power, definition: seeking control, valence: neutral, category: Personal}\n"
    )
    vocab = load_vocabulary(path)
    assert vocab.names == ["benevolence", "power"] and vocab.lookup("kindness") == "benevolence"
    assert vocab.fingerprint != load_vocabulary().fingerprint


def test_bad_vocabulary_names_file_and_field(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\nvalues:\n  - {name: Kindness, definition: d, category: Social}\n")
    with pytest.raises(InputError) as e:
        load_vocabulary(path)
    assert str(path) in str(e.value) and "values.0.name" in str(e.value)
    path.write_text("name: x\nvalues:\n  - {name: a, definition: d, category: Cosmic}\n")
    with pytest.raises(InputError, match="category"):
        load_vocabulary(path)
    path.write_text("name: x\nvalues:\n  - {name: a, definition: d, category: Social, aliases: [b]}\n  - {name: b, definition: d, category: Social}\n")
    with pytest.raises(InputError, match="names both"):
        load_vocabulary(path)


def test_taxonomy_json_levels(shared_data: Path) -> None:
    folder = shared_data / "values-taxonomy"
    l1 = load_vocabulary(folder, level=1)
    l2 = load_vocabulary(folder, level=2)
    assert len(l1.values) == 266 and len(l2.values) == 26
    assert {v.category for v in l1.values} == set(CATEGORIES)
    assert "communicative clarity and precision" in l1.names


def test_values_tree_csv(tmp_path: Path) -> None:
    path = tmp_path / "values_tree.csv"
    path.write_text(
        "cluster_id,name,description,level,parent_cluster_id,pct_total_occurrences\n"
        "c3,Social values,about others,3,,50\n"
        "c2,Care for others,caring,2,c3,20\n"
        "c1,Emotional support,supporting feelings,1,c2,5\n"
        "c1b,Fair treatment,treating equally,1,c2,4\n"
    )
    vocab = load_vocabulary(path, level=1)
    assert vocab.names == ["emotional support", "fair treatment"]
    assert {v.category for v in vocab.values} == {"Social"}
