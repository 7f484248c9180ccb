"""What a run pins of its models, and how an endpoint's answer is checked against it.

Pure functions over the settings an endpoint reports: the driver reads them from a server, a
simulator makes them up. `Dispatcher` refuses an endpoint whose settings differ from the pin.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from orchestrator.embed.contract import MODELS
from orchestrator.errors import InputError


@dataclass
class ModelSettings:
    """One model as one endpoint serves it; the in-flight limit comes from its instance count.

    `version`: the version requests name (the run's pinned one, else the newest served);
    `versions`: every version the endpoint serves; `missing`: a pinned version it does not serve.
    `clamped_from`: the --max-in-flight asked for when the config's fair share lowered it.
    """

    name: str
    version: str
    width: int
    max_batch_size: int
    instances: int
    max_in_flight: int
    weights_sha256: str
    precision: str = "unknown"
    versions: tuple[str, ...] = ()
    missing: str | None = None
    clamped_from: int | None = None

    def identity(self) -> dict[str, Any]:
        """What a run pins of this model: same name, version, width, weights and precision."""
        return {"version": self.version, "weights_sha256": self.weights_sha256,
                "width": self.width, "precision": self.precision}


def version_key(version: str) -> tuple[int, str]:
    """Numeric order of Triton version names (directories 1, 2, ... 10)."""
    return (int(version), "") if version.isdigit() else (-1, version)


def model_differences(reference: dict[str, ModelSettings], other: dict[str, ModelSettings]
                      ) -> list[str]:
    """What makes `other` serve another model than `reference`: a version it lacks, another
    width (when known), weights checksum or precision."""
    diffs = []
    for model in MODELS:
        a, b = reference[model], other[model]
        if b.missing is not None:
            diffs.append(f"{model} version {b.missing} not served (serves "
                         f"{', '.join(b.versions) or 'none'})")
            continue
        if a.version != b.version:
            diffs.append(f"{model} version {b.version} (expected {a.version})")
        if a.width != b.width and a.width > 0 and b.width > 0:
            diffs.append(f"{model} width {b.width} (expected {a.width})")
        if a.weights_sha256 != b.weights_sha256:
            diffs.append(f"{model} weights_sha256 {b.weights_sha256[:16]} "
                         f"(expected {a.weights_sha256[:16]})")
        if a.precision != b.precision:
            diffs.append(f"{model} precision {b.precision} (expected {a.precision})")
    return diffs


def pin_versions(asked: dict[str, str], served: dict[str, dict[str, ModelSettings]]
                 ) -> dict[str, str]:
    """Per model: the version asked for (InputError when no endpoint serves it), else the
    newest version every endpoint up at start serves. `served`: url -> its settings."""
    pinned = {}
    for m in MODELS:
        versions = [set(s[m].versions) for s in served.values()]
        listing = "; ".join(f"{url}: {', '.join(s[m].versions) or 'none'}"
                            for url, s in served.items())
        wanted = asked.get(m)
        if wanted is not None:
            if not any(wanted in v for v in versions):
                raise InputError(f"no endpoint serves {m} version {wanted} (versions served: "
                                 f"{listing})")
            pinned[m] = wanted
            continue
        common = set.intersection(*versions)
        if not common:
            raise InputError(f"no version of {m} is served by every endpoint ({listing}); "
                             "choose one with --model-version")
        pinned[m] = max(common, key=version_key)
    return pinned


def in_flight_limit(share: int | None, instances: int, asked: int | None
                    ) -> tuple[int, int | None]:
    """An endpoint's capacity for one model: (requests in flight, the --max-in-flight asked for if
    the fair share lowered it).

    Default: the config's fair share (`share`, already x instances), else 2 x instances (Triton's
    guidance: one request running per instance, one waiting). A larger --max-in-flight is clamped
    to the fair share, so one bulk run cannot fill a queue other users share.
    """
    if asked is None:
        return share or 2 * instances, None
    if share is not None and asked > share:
        return share, asked
    return asked, None
