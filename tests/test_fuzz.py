"""Property tests: any record either becomes a pair or a counted rejection; nothing else escapes."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from valind.ingest.adapters import ADAPTERS, make_adapter
from valind.ingest.adapters.base import Built, Reject, Row
from valind.ingest.stage import check_pair

json_leaf = st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.floats(allow_nan=False), st.text(max_size=30))
json_value = st.recursive(json_leaf, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)
message = st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant", "system", "bot"]), "content": st.one_of(st.text(max_size=20), st.integers())})
transcript = st.lists(st.tuples(st.sampled_from(["Human", "Assistant", "Robot"]), st.text(max_size=20)), max_size=5).map(
    lambda turns: "".join(f"\n\n{who}: {text}" for who, text in turns)
)
FIELDS = ["prompt", "chosen", "rejected", "response_0", "response_1", "better_response_id", "safer_response_id",
          "score_chosen", "score_rejected", "instruction", "completions", "response_1", "response_2",
          "preference_strength", "response", "helpfulness"]
field_value = st.one_of(json_value, transcript, st.lists(message, max_size=4), st.sampled_from([0, 1, 2, -3, "1", "N/A"]))
record = st.dictionaries(st.sampled_from(FIELDS), field_value, max_size=10)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(records=st.lists(record, min_size=1, max_size=4))
def test_every_adapter_returns_pairs_or_rejections(records: list[dict[str, Any]]) -> None:
    for name, cls in ADAPTERS.items():
        adapter = make_adapter(cls, {}, "fuzz")
        rows = [Row(i + 1, r) for i, r in enumerate(records)]
        accounted = 0
        for out in adapter.convert(rows):
            if type(out) is Reject:
                assert out.reason and out.detail, name
                accounted += out.rows
            else:
                assert type(out) is Built, name
                prompt, chosen, rejected, meta = out.pair
                assert isinstance(chosen, str) and isinstance(rejected, str) and isinstance(meta, dict), name
                assert all(m["role"] in {"user", "assistant", "system"} and isinstance(m["content"], str) for m in prompt), name
                check_pair(prompt, chosen.strip(), rejected.strip(), 1000)  # must not raise either
                accounted += 2 if name == "helpsteer2_regular" else 1
        assert accounted == len(records), name  # every record ends in exactly one place
