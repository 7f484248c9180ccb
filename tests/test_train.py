"""train: record-level split, the fixed best-epoch restore, balancing, refusals, the saved file and card."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
from tolerances import float32_result_bound, mlp_probability_bound, sum_bound

torch = pytest.importorskip("torch")

from orchestrator.classify.classifier import load_classifier  # noqa: E402
from orchestrator.errors import InputError  # noqa: E402
from orchestrator.learning.train import (  # noqa: E402
    TrainConfig,
    card_path_for,
    run_train,
    split_records,
    train_classifier,
)
from orchestrator.write.embeddings import EmbeddingsHeader, EmbeddingsWriter  # noqa: E402

DNA_W, PROT_W = 8, 16
WIDTH = DNA_W + PROT_W
MODELS = [{"name": "dnabert_s", "width": DNA_W, "weights_sha256": "x"},
          {"name": "esm2", "width": PROT_W, "weights_sha256": "y"}]
FRAMES = ("F1", "F2", "F3", "R1", "R2", "R3")
# Small and fast; the original's lr 2e-4 needs far more epochs than a test can afford.
FAST = {"epochs": 25, "lr": 0.02, "hidden": 32, "patience": 5}


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def frame_ids(record: str, n: int) -> list[str]:
    return [f"{record}_chunk_{k // 6 + 1}{FRAMES[k % 6]}" for k in range(n)]


def write_file(path: Path, records: dict[str, np.ndarray], *, label: str | None = None,
               chunk_size: int = 300, models: list[dict] | None = None) -> str:
    """An embeddings file holding each record's rows ([frames, WIDTH]) in order."""
    models = models or MODELS
    writer = EmbeddingsWriter(path, EmbeddingsHeader(chunk_size=chunk_size, models=models, label=label))
    dna_w = models[0]["width"]
    for record, rows in records.items():
        writer.append(frame_ids(record, len(rows)), rows[:, :dna_w], rows[:, dna_w:])
    writer.close()
    return str(path)


def gaussian_records(rng: np.random.Generator, prefix: str, n_records: int, frames: int,
                     mean: float) -> dict[str, np.ndarray]:
    return {f"{prefix}{i}": rng.normal(mean, 1.0, (frames, WIDTH)).astype(np.float32)
            for i in range(n_records)}


def read_card(output: Path) -> dict:
    return json.loads(card_path_for(output).read_text())


def two_files(tmp_path: Path, *, n_viral: int = 10, n_other: int = 10, frames: int = 4,
              seed: int = 0) -> tuple[str, str]:
    rng = np.random.default_rng(seed)
    viral = write_file(tmp_path / "viral.h5", gaussian_records(rng, "v", n_viral, frames, 1.0),
                       label="viral")
    other = write_file(tmp_path / "other.h5", gaussian_records(rng, "h", n_other, frames, -1.0),
                       label="host")
    return viral, other


# --------------------------------------------------------------------------- split_records


def test_split_records_holds_out_whole_records_stratified_and_seeded() -> None:
    rng = np.random.default_rng(1)
    for trial in range(60):
        n_viral, n_other = int(rng.integers(2, 40)), int(rng.integers(2, 40))
        fraction = float(rng.uniform(0.05, 0.6))
        record_ids, labels = [], []
        for prefix, n, label in (("v", n_viral, 1), ("h", n_other, 0)):
            for i in range(n):
                k = int(rng.integers(1, 7))
                record_ids += [f"{prefix}{i}"] * k
                labels += [label] * k
        order = rng.permutation(len(labels))  # frames of a record need not be adjacent
        record_ids = [record_ids[i] for i in order]
        labels = np.array(labels)[order]
        train, val = split_records(record_ids, labels, fraction, seed=trial)

        assert np.array_equal(np.sort(np.concatenate([train, val])), np.arange(len(labels)))
        train_records = {record_ids[i] for i in train}
        val_records = {record_ids[i] for i in val}
        assert not train_records & val_records
        for label, n in ((1, n_viral), (0, n_other)):
            held = len({record_ids[i] for i in val if labels[i] == label})
            assert 1 <= held <= n - 1  # both classes on both sides
            assert abs(held - n * fraction) <= 1  # the fraction is honoured, in records
        again = split_records(record_ids, labels, fraction, seed=trial)
        assert np.array_equal(again[0], train) and np.array_equal(again[1], val)


def test_split_records_depends_on_the_seed_not_on_frame_order() -> None:
    record_ids = [f"r{i}" for i in range(50) for _ in range(3)]
    labels = np.array([i % 2 for i in range(50) for _ in range(3)])
    splits = {tuple(split_records(record_ids, labels, 0.2, seed)[1]) for seed in range(5)}
    assert len(splits) > 1
    _, val = split_records(record_ids, labels, 0.2, 7)
    reversed_ids = record_ids[::-1]
    _, val_rev = split_records(reversed_ids, labels[::-1], 0.2, 7)
    assert {record_ids[i] for i in val} == {reversed_ids[i] for i in val_rev}


def test_split_records_keeps_a_lone_record_of_a_class_for_training() -> None:
    record_ids = ["v0"] * 4 + [f"h{i}" for i in range(10) for _ in range(2)]
    labels = np.array([1] * 4 + [0] * 20)
    train, val = split_records(record_ids, labels, 0.3, 0)
    assert set(range(4)) <= set(train.tolist())
    assert len({record_ids[i] for i in val}) == 3


# --------------------------------------------------------------------------- learning


def test_separable_records_are_learned_and_shuffled_labels_are_not(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    viral = gaussian_records(rng, "v", 40, 5, 0.6)
    other = gaussian_records(rng, "h", 40, 5, -0.6)
    out = tmp_path / "real.safetensors"
    run_train(viral=[write_file(tmp_path / "v.h5", viral)], other=[write_file(tmp_path / "o.h5", other)],
              output=str(out), **FAST)
    assert read_card(out)["validation_metrics"]["frame"]["accuracy"] >= 0.9

    # Control: the same kind of features, labels assigned to records at random.
    records = {**gaussian_records(rng, "a", 200, 3, 0.6), **gaussian_records(rng, "b", 200, 3, -0.6)}
    names = list(records)
    viral_names = set(rng.permutation(names)[:200].tolist())
    shuffled = tmp_path / "shuffled.safetensors"
    run_train(viral=[write_file(tmp_path / "sv.h5", {k: records[k] for k in names if k in viral_names})],
              other=[write_file(tmp_path / "so.h5", {k: records[k] for k in names if k not in viral_names})],
              output=str(shuffled), **FAST)
    assert 0.3 <= read_card(shuffled)["validation_metrics"]["frame"]["accuracy"] <= 0.7


def test_best_epoch_weights_are_restored_not_the_last_epochs(tmp_path: Path) -> None:
    # Validation labels are the flip of training labels on the same distributions: the more the
    # model learns, the worse validation gets, so the best epoch comes early and is not the last.
    rng = np.random.default_rng(5)
    n = 200
    y_train = rng.integers(0, 2, n)
    y_val = rng.integers(0, 2, n)
    x_train = rng.normal(0, 1, (n, WIDTH)) + (2 * y_train[:, None] - 1) * 0.8
    x_val = rng.normal(0, 1, (n, WIDTH)) + (2 * y_val[:, None] - 1) * 0.8
    features = np.vstack([x_train, x_val]).astype(np.float32)
    labels = np.concatenate([y_train, 1 - y_val])
    config = TrainConfig(epochs=8, lr=0.05, hidden=16, patience=100, seed=1)
    result = train_classifier(features, labels, np.arange(n), np.arange(n, 2 * n), config)

    val_losses = [e["val_loss"] for e in result.history]
    assert len(val_losses) == 8 and not result.stopped_early
    assert result.best_epoch == int(np.argmin(val_losses)) + 1
    assert result.best_epoch < 8

    from orchestrator.classify.classifier import save_classifier_safetensors

    path = tmp_path / "best.safetensors"
    save_classifier_safetensors(result.state, path)
    proba = load_classifier(path).predict_proba(features[n:]).astype(np.float64)
    loss = float(-np.log(proba[np.arange(n), labels[n:]]).mean())
    # Training scored validation in float32 torch: each probability p carries at most
    # mlp_probability_bound of rounding (tolerances.py), so its log at most that / p; the mean of
    # n float32 logs adds one sum's rounding.
    state = {k: np.asarray(v) for k, v in result.state.items()}
    p_error = mlp_probability_bound(state, features[n:]) + float32_result_bound(state, features[n:])
    bound = p_error / proba[np.arange(n), labels[n:]].min() + sum_bound(n, loss)
    assert abs(loss - result.best_val_loss) <= bound
    assert abs(loss - val_losses[-1]) > bound  # so the check above tells best from last


def test_early_stopping_after_patience_epochs_without_improvement() -> None:
    rng = np.random.default_rng(2)
    n = 100
    y = rng.integers(0, 2, 2 * n)
    features = (rng.normal(0, 1, (2 * n, WIDTH)) + (2 * y[:, None] - 1) * 0.8).astype(np.float32)
    labels = np.concatenate([y[:n], 1 - y[n:]])  # validation flipped: it never improves after epoch 1
    result = train_classifier(features, labels, np.arange(n), np.arange(n, 2 * n),
                              TrainConfig(epochs=50, lr=0.05, hidden=16, patience=3))
    assert result.stopped_early and result.best_epoch == 1
    assert len(result.history) == 4
    assert "did not improve for 3 epochs after epoch 1" in result.stop_reason


def test_a_model_is_saved_when_max_epochs_are_reached(tmp_path: Path) -> None:
    viral, other = two_files(tmp_path)
    out = tmp_path / "model.safetensors"
    card = run_train(viral=[viral], other=[other], output=str(out), **{**FAST, "epochs": 3})
    assert out.is_file()
    assert card == read_card(out)
    assert len(card["epochs"]) == 3 and not card["stopped_early"]
    assert "maximum of 3 epochs" in card["stop_reason"]
    losses = [e["val_loss"] for e in card["epochs"]]
    assert card["best_epoch"] == int(np.argmin(losses)) + 1
    assert [e["epoch"] for e in card["epochs"]] == [1, 2, 3]


def test_training_is_deterministic_for_a_seed(tmp_path: Path) -> None:
    viral, other = two_files(tmp_path)
    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    card_a = run_train(viral=[viral], other=[other], output=str(a), **{**FAST, "epochs": 4})
    card_b = run_train(viral=[viral], other=[other], output=str(b), **{**FAST, "epochs": 4})
    assert card_a["epochs"] == card_b["epochs"]
    state_a, state_b = load_classifier(a).state_dict(), load_classifier(b).state_dict()
    assert all(np.array_equal(state_a[k], state_b[k]) for k in state_a)


def test_a_last_batch_of_one_frame_does_not_break_batchnorm() -> None:
    rng = np.random.default_rng(0)
    features = rng.normal(0, 1, (12, WIDTH)).astype(np.float32)
    labels = np.array([0, 1] * 6)
    result = train_classifier(features, labels, np.arange(9), np.arange(9, 12),
                              TrainConfig(epochs=2, batch_size=4, hidden=8), progress=True)
    assert len(result.history) == 2


# --------------------------------------------------------------------------- outputs


def test_saved_file_loads_for_predict_and_card_describes_it(tmp_path: Path) -> None:
    viral, other = two_files(tmp_path, n_viral=8, n_other=12)
    out = tmp_path / "model.safetensors"
    card = run_train(viral=[viral], other=[other], output=str(out), **{**FAST, "epochs": 3})
    classifier = load_classifier(out)
    assert classifier.input_width == WIDTH and classifier.hidden_width == 32
    assert set(classifier.state_dict()) >= {"bn1.num_batches_tracked", "hidden_layer.weight"}
    assert classifier.state_dict()["hidden_layer.weight"].dtype == np.float32

    from safetensors import safe_open

    with safe_open(str(out), "np") as fh:
        meta = fh.metadata()
    assert {k: meta[k] for k in ("format", "chunk_size", "card")} == {
        "format": "virnucpro-classifier", "chunk_size": "300", "card": "model.card.json"}
    assert classifier.metadata == meta
    # the encoder weights it learned from are recorded: other weights are named, the same are not
    assert classifier.encoder_mismatch(MODELS) is None
    other_weights = [{**MODELS[0], "weights_sha256": "f" * 64}, MODELS[1]]
    assert "not meaningful" in classifier.encoder_mismatch(other_weights)
    assert card["chunk_size"] == 300 and card["models"] == MODELS
    assert card["classifier"]["sha256"] == classifier.sha256
    assert [(f["side"], f["frames"], f["records"]) for f in card["data"]] == [("viral", 32, 8),
                                                                             ("other", 48, 12)]
    split = card["split"]
    for side, n in (("viral", 8), ("other", 12)):
        assert split["train"][side]["records"] + split["validation"][side]["records"] == n
        assert split["validation"][side]["records"] >= 1
    assert card["recipe"]["seed"] == 42 and card["recipe"]["device"] == "cpu"
    assert card["validation_metrics"]["frame"]["n"] == sum(v["frames"] for v in split["validation"].values())
    assert set(card["epochs"][0]) == {"epoch", "train_loss", "val_loss", "val_accuracy", "lr"}


def test_card_path_sits_beside_the_model() -> None:
    assert card_path_for("out/model.safetensors") == Path("out/model.card.json")


@pytest.mark.parametrize("mode", ["downsample", "weight"])
def test_balance_modes_record_their_counts(tmp_path: Path, mode: str) -> None:
    viral, other = two_files(tmp_path, n_viral=10, n_other=30)
    out = tmp_path / "model.safetensors"
    card = run_train(viral=[viral], other=[other], output=str(out), balance=mode,
                     **{**FAST, "epochs": 2})
    train = card["split"]["train"]
    assert card["recipe"]["balance"] == mode
    assert train["viral"]["frames"] < train["other"]["frames"]
    if mode == "downsample":
        assert train["viral"]["frames_used"] == train["other"]["frames_used"] == train["viral"]["frames"]
        assert card["recipe"]["class_weight"] is None
    else:
        assert train["other"]["frames_used"] == train["other"]["frames"]
        w_other, w_viral = card["recipe"]["class_weight"]
        # float64 ratios of frame counts: a few units of 1e-16, inside pytest.approx's default rel 1e-6
        assert w_viral / w_other == pytest.approx(train["other"]["frames"] / train["viral"]["frames"])
    # validation is never resampled
    assert card["validation_metrics"]["frame"]["n"] == sum(v["frames"] for v in card["split"]["validation"].values())


# --------------------------------------------------------------------------- refusals and warnings


def test_refuses_a_missing_side(tmp_path: Path) -> None:
    viral, _ = two_files(tmp_path)
    with pytest.raises(InputError, match="--other"):
        run_train(viral=[viral], other=[], output=str(tmp_path / "m.safetensors"))
    with pytest.raises(InputError, match="--viral"):
        run_train(viral=[], other=[viral], output=str(tmp_path / "m.safetensors"))


def test_refuses_a_file_given_twice(tmp_path: Path) -> None:
    viral, other = two_files(tmp_path)
    with pytest.raises(InputError, match="given twice"):
        run_train(viral=[viral], other=[other, viral], output=str(tmp_path / "m.safetensors"))


def test_refuses_mismatched_chunk_size_and_models(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    viral, _ = two_files(tmp_path)
    records = gaussian_records(rng, "h", 3, 2, 0.0)
    other_500 = write_file(tmp_path / "o500.h5", records, chunk_size=500)
    with pytest.raises(InputError, match=r"o500\.h5: chunk size 500.*has 300"):
        run_train(viral=[viral], other=[other_500], output=str(tmp_path / "m.safetensors"))
    models = [MODELS[0], {**MODELS[1], "weights_sha256": "z"}]
    other_models = write_file(tmp_path / "omod.h5", records, models=models)
    with pytest.raises(InputError, match=r"omod\.h5: made with another protein model than .*weights_sha256 'z' vs 'y'"):
        run_train(viral=[viral], other=[other_models], output=str(tmp_path / "m.safetensors"))


def test_refuses_an_empty_file(tmp_path: Path) -> None:
    viral, _ = two_files(tmp_path)
    empty = write_file(tmp_path / "empty.h5", {})
    with pytest.raises(InputError, match=r"empty\.h5: holds no frames"):
        run_train(viral=[viral], other=[empty], output=str(tmp_path / "m.safetensors"))


def test_refuses_too_few_records_and_bad_output(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    viral = write_file(tmp_path / "v.h5", gaussian_records(rng, "v", 1, 4, 1.0))
    other = write_file(tmp_path / "o.h5", gaussian_records(rng, "h", 1, 4, -1.0))
    with pytest.raises(InputError, match="single record"):
        run_train(viral=[viral], other=[other], output=str(tmp_path / "m.safetensors"))
    with pytest.raises(InputError, match="safetensors"):
        run_train(viral=[viral], other=[other], output=str(tmp_path / "m.pth"))



def test_device_cuda_without_a_gpu_is_refused(tmp_path: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    viral, other = two_files(tmp_path)
    with pytest.raises(InputError, match="no CUDA GPU"):
        run_train(viral=[viral], other=[other], output=str(tmp_path / "m.safetensors"),
                  device="cuda")
    card = run_train(viral=[viral], other=[other], output=str(tmp_path / "m.safetensors"),
                     epochs=2)  # auto -> the CPU here
    assert card["recipe"]["device"] == "cpu"


def test_warns_on_contradicting_labels_and_shared_records(tmp_path: Path,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    rng = np.random.default_rng(0)
    viral = write_file(tmp_path / "v.h5", gaussian_records(rng, "v", 6, 3, 1.0), label="host")
    shared = {**gaussian_records(rng, "h", 6, 3, -1.0), "v0": rng.normal(0, 1, (2, WIDTH)).astype(np.float32)}
    other = write_file(tmp_path / "o.h5", shared, label="other")
    with caplog.at_level(logging.WARNING, logger="orchestrator"):
        run_train(viral=[viral], other=[other], output=str(tmp_path / "m.safetensors"),
                  **{**FAST, "epochs": 1})
    text = caplog.text
    assert "v.h5: its label is 'host' but it was given as --viral" in text
    assert "appear in both viral and non-viral files (e.g. v0)" in text


def test_warns_when_validation_lacks_a_class(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    rng = np.random.default_rng(0)
    viral = write_file(tmp_path / "v.h5", gaussian_records(rng, "v", 1, 4, 1.0))
    other = write_file(tmp_path / "o.h5", gaussian_records(rng, "h", 6, 4, -1.0))
    out = tmp_path / "m.safetensors"
    with caplog.at_level(logging.WARNING, logger="orchestrator"):
        card = run_train(viral=[viral], other=[other], output=str(out), **{**FAST, "epochs": 1})
    assert "validation holds no viral frames" in caplog.text
    assert card["split"]["validation"]["viral"] == {"frames": 0, "records": 0}
    assert card["validation_metrics"]["frame"]["roc_auc"] is None
