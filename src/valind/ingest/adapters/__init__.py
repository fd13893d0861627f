"""The dataset adapter registry: one small module per source schema, plus ``generic``."""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ValidationError

from valind.errors import ConfigError, UnknownNameError
from valind.ingest.adapters.base import Adapter
from valind.ingest.adapters.generic import Generic
from valind.ingest.adapters.helpsteer2 import HelpSteer2Preference, HelpSteer2Regular
from valind.ingest.adapters.hh_rlhf import HHRLHF
from valind.ingest.adapters.pku_saferlhf import PKUSafeRLHF
from valind.ingest.adapters.ultrafeedback import UltraFeedbackBinarized, UltraFeedbackRaw

if TYPE_CHECKING:
    from valind.config import SourceConfig

# Order matters for ``auto``: the first adapter whose ``detect`` accepts the first record wins,
# so the most specific schemas come first and ``generic`` last.
ADAPTERS: dict[str, type[Adapter]] = {
    a.name: a
    for a in (HHRLHF, PKUSafeRLHF, UltraFeedbackBinarized, UltraFeedbackRaw, HelpSteer2Preference, HelpSteer2Regular, Generic)
}
AUTO = "auto"
_SUFFIXES = (".gz", ".jsonl", ".ndjson", ".json", ".parquet", ".csv")


def adapter_class(name: str) -> type[Adapter]:
    try:
        return ADAPTERS[name]
    except KeyError:
        raise UnknownNameError("adapter", name, [*ADAPTERS, AUTO]) from None


def adapter_for_hub_name(path: str) -> type[Adapter] | None:
    for cls in ADAPTERS.values():
        if path in cls.hub_names:
            return cls
    return None


def detect_adapter(record: dict[str, Any], where: str) -> type[Adapter]:
    for cls in ADAPTERS.values():
        if cls.detect(record):
            return cls
    raise ConfigError(
        f"{where}: cannot tell the dataset schema from the first record's fields "
        f"({', '.join(sorted(map(str, record))[:12])}); set the adapter (one of {', '.join(ADAPTERS)}) "
        "and, for 'generic', the column mapping in its options"
    )


def make_adapter(cls: type[Adapter], options: dict[str, Any], source: str) -> Adapter:
    try:
        parsed: BaseModel = cls.Options.model_validate(options)
    except ValidationError as err:
        lines = [f"source {source!r}: invalid options for adapter {cls.name!r}:"]
        for e in err.errors():
            lines.append(f"  options.{'.'.join(map(str, e['loc']))}: {e['msg']}")
        raise ConfigError("\n".join(lines)) from None
    return cls(parsed)


def source_name(src: SourceConfig) -> str:
    """The source's name: as configured, else the file or dataset name without extensions."""
    if src.name:
        return src.name
    stem = PurePosixPath(src.path.rstrip("/")).name
    while stem.endswith(_SUFFIXES):
        stem = stem.rsplit(".", 1)[0]
    return stem or "source"
