"""The toy Triton models and inputs every toy-cluster run uses (tests, benches, `--real`).

`dnabert_s`/`esm2` are numpy-only Python-backend models that honour the Triton contract (SEQUENCE
strings in, EMBEDDING float32 rows out), sleep a fixed time per execution (a GPU pass without the
GPU) and load in about a second, so servers restart fast.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

TOY_WIDTH = 8

TOY_CONFIG = """\
name: "{name}"
backend: "python"
max_batch_size: {max_batch_size}
input [ {{ name: "SEQUENCE" data_type: TYPE_STRING dims: [ 1 ] }} ]
output [ {{ name: "EMBEDDING" data_type: TYPE_FP32 dims: [ {dims} ] }} ]
instance_group [ {{ kind: KIND_CPU count: {instances} }} ]
{batching}
{version_policy}
parameters [
  {{ key: "weights_sha256" value: {{ string_value: "toy-{name}{weights_tag}" }} }},
  {{ key: "record_parameters_to" value: {{ string_value: "{record_to}" }} }}{fair_share}{extra}
]
"""

# EMBEDDING row = letter frequencies of the sequence in 8 bins (a pure function of the string).
TOY_MODEL = """\
import json
import time

import numpy as np
import triton_python_backend_utils as pb_utils

DELAY = {delay}
SHIFT = {shift}  # added to every value: another model version gives other answers
REPEAT = {repeat}  # the 8 bins repeated: wider rows for memory tests
HANG_AFTER = {hang_after}  # from this execute() on, never return (a hung instance); -1: never


def embed(s):
    b = np.frombuffer(s, dtype=np.uint8).astype(np.int64)
    hist = np.bincount(b % 8, minlength=8).astype(np.float32)
    return np.tile(hist / max(1, len(b)), REPEAT) + SHIFT


class TritonPythonModel:
    def initialize(self, args):
        params = json.loads(args["model_config"]).get("parameters", {{}})
        self.record_to = params.get("record_parameters_to", {{}}).get("string_value", "")

    def execute(self, requests):
        out = []
        self.batches = getattr(self, "batches", 0) + 1
        if 0 <= HANG_AFTER < self.batches:
            while True:
                time.sleep(60)
        if DELAY:
            time.sleep(DELAY)
        for r in requests:
            if self.record_to:  # request parameters: where Triton forwards gRPC headers
                with open(self.record_to, "a") as fh:
                    fh.write(r.parameters() + "\\n")
            x = pb_utils.get_input_tensor_by_name(r, "SEQUENCE").as_numpy().reshape(-1)
            e = np.stack([embed(s) for s in x]).astype(np.float32)
            out.append(pb_utils.InferenceResponse([pb_utils.Tensor("EMBEDDING", e)]))
        return out
"""


def write_toy_repository(root: Path, delay: float = 0.0,
                         models: tuple[str, ...] = ("dnabert_s", "esm2"),
                         max_batch_size: int = 16, instances: int = 1, weights_tag: str = "",
                         record_parameters_to: Path | None = None,
                         dynamic_batching: bool = True, width: int = TOY_WIDTH,
                         priority_levels: bool = True, max_queue_size: int | None = None,
                         max_in_flight_per_instance: int | None = None,
                         hang_after: int | None = None, precision: str | None = None,
                         versions: tuple[int, ...] = (1,), queue_delay_us: int = 1000) -> Path:
    """dnabert_s (fixed width in the config) and esm2 (width -1: the client must probe).

    `delay` seconds of sleep per execute() make a run slow enough to interrupt mid-way;
    `instances` per model; `weights_tag` changes the weights_sha256 the config declares;
    `record_parameters_to` makes the models append each request's parameters to that file;
    without `dynamic_batching` every request is one execute() (a fixed `delay` per request);
    `width` (a multiple of 8) widens both models' rows;
    `priority_levels`: declare 3 request priority levels, default 2, as the shipped configs do;
    `max_queue_size`: cap the queue (requests beyond it are rejected: load shedding);
    `max_in_flight_per_instance`: the fair-share parameter of the shipped configs;
    `hang_after`: each model instance hangs forever from its (hang_after+1)-th execute() on;
    `precision`: the config's precision parameter (as the shipped configs state fp32/fp16);
    `queue_delay_us`: the dynamic batcher's max_queue_delay_microseconds;
    `versions`: version folders served side by side (version_policy all); version V adds V-1 to
    every value and declares weights_sha256_V (version 1: the checksum of a one-version toy), so
    each version answers and identifies differently.
    """
    batching = ""
    if dynamic_batching:
        levels = "priority_levels: 3 default_priority_level: 2" if priority_levels else ""
        queue = (f"default_queue_policy {{ max_queue_size: {max_queue_size} "
                 "timeout_action: REJECT }" if max_queue_size is not None else "")
        batching = (f"dynamic_batching {{ max_queue_delay_microseconds: {queue_delay_us} {levels} "
                    f"{queue} }}")
    fair_share = ("" if max_in_flight_per_instance is None else
                  ',\n  { key: "max_in_flight_per_instance" value: { string_value: "'
                  f'{max_in_flight_per_instance}" }} }}')
    for name, dims in (("dnabert_s", str(width)), ("esm2", "-1")):
        if name not in models:
            continue
        extra = ""
        if precision is not None:
            extra += f',\n  {{ key: "precision" value: {{ string_value: "{precision}" }} }}'
        if versions != (1,):
            extra += "".join(f',\n  {{ key: "weights_sha256_{v}" value: {{ string_value: '
                             f'"toy-{name}{weights_tag}{"" if v == 1 else f"-v{v}"}" }} }}'
                             for v in versions)
        (root / name).mkdir(parents=True, exist_ok=True)
        (root / name / "config.pbtxt").write_text(TOY_CONFIG.format(
            name=name, dims=dims, max_batch_size=max_batch_size, instances=instances,
            weights_tag=weights_tag, record_to=record_parameters_to or "", batching=batching,
            fair_share=fair_share, extra=extra,
            version_policy="version_policy: { all { } }" if versions != (1,) else ""))
        for v in versions:
            (root / name / str(v)).mkdir(parents=True, exist_ok=True)
            (root / name / str(v) / "model.py").write_text(
                TOY_MODEL.format(delay=float(delay), repeat=width // TOY_WIDTH, shift=v - 1,
                                 hang_after=-1 if hang_after is None else hang_after))
    return root


def write_toy_classifier(path: Path, width: int = 2 * TOY_WIDTH, seed: int = 7) -> Path:
    """A random MLP of the published shape (input width -> 512 -> 2) as safetensors."""
    from orchestrator.classify.classifier import save_classifier_safetensors

    rng = np.random.default_rng(seed)
    state = {
        "hidden_layer.weight": rng.normal(0, 1.0, size=(512, width)).astype(np.float32),
        "hidden_layer.bias": rng.normal(0, 0.5, size=512).astype(np.float32),
        "bn1.weight": np.ones(512, np.float32),
        "bn1.bias": np.zeros(512, np.float32),
        "bn1.running_mean": np.zeros(512, np.float32),
        "bn1.running_var": np.ones(512, np.float32),
        "bn1.num_batches_tracked": np.array(0, np.int64),
        "output_layer.weight": rng.normal(0, 0.05, size=(2, 512)).astype(np.float32),
        "output_layer.bias": np.zeros(2, np.float32),
    }
    save_classifier_safetensors(state, path)
    return path


def write_coding_fasta(path: Path, records: int, length: int, seed: int = 1) -> Path:
    """Records made of stop-free codons (every chunk keeps frames), deterministic."""
    rng = np.random.default_rng(seed)
    sense = [a + b + c for a in "ACGT" for b in "ACGT" for c in "ACGT"
             if a + b + c not in ("TAA", "TAG", "TGA")]
    with open(path, "w") as fh:
        for i in range(records):
            codons = rng.integers(0, len(sense), size=length // 3 + 1)
            seq = "".join(sense[c] for c in codons)[:length]
            fh.write(f">rec{i:05d}\n")
            for j in range(0, len(seq), 60):
                fh.write(seq[j:j + 60] + "\n")
    return path
