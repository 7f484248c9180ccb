"""Classifier: numerics against torch, the published .pth format, and refusal of hostile pickles."""

from __future__ import annotations

import io
import os
import pickle
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest
from golden_data import GOLDEN
from tolerances import float32_result_bound, mlp_probability_bound

from orchestrator.classify.classifier import (
    Classifier,
    load_classifier,
    save_classifier_pth,
    save_classifier_safetensors,
)
from orchestrator.errors import ClassifierError

torch = pytest.importorskip("torch")
nn = torch.nn

REPO = Path(__file__).resolve().parents[1]

# The original module, as a script run as __main__: the class is then pickled as
# __main__.MLPClassifier exactly like the published files. argv: state.pt, out.pth
ORIGINAL_SAVE_SCRIPT = textwrap.dedent(
    """
    import sys
    import torch
    import torch.nn.functional as F
    from torch import nn

    class MLPClassifier(nn.Module):
        def __init__(self, input_dim, hidden_dim, num_class):
            super().__init__()
            self.hidden_layer = nn.Linear(input_dim, hidden_dim)
            self.bn1 = nn.BatchNorm1d(hidden_dim)
            self.output_layer = nn.Linear(hidden_dim, num_class)
            self.dropout = nn.Dropout(0.5)

        def forward(self, x):
            x = F.relu(self.bn1(self.hidden_layer(x)))
            return self.output_layer(self.dropout(x))

    if __name__ == "__main__":
        mode = sys.argv[1]
        if mode == "save":
            state = torch.load(sys.argv[2], weights_only=True)
            hidden, width = state["hidden_layer.weight"].shape
            model = MLPClassifier(width, hidden, 2)
            model.load_state_dict(state)
            torch.save(model, sys.argv[3])
        else:  # the original tool's way of reading a classifier: unpickle the whole module
            model = torch.load(sys.argv[2], weights_only=False).eval()
            x = torch.load(sys.argv[3], weights_only=True)
            with torch.no_grad():
                torch.save(torch.softmax(model(x), dim=1), sys.argv[4])
    """
)


def random_state(width: int, hidden: int = 512, seed: int = 0) -> dict[str, np.ndarray]:
    """Random weights with non-trivial BatchNorm running statistics."""
    rng = np.random.default_rng(seed)
    f32 = np.float32
    return {
        "hidden_layer.weight": (rng.normal(size=(hidden, width)) / np.sqrt(width)).astype(f32),
        "hidden_layer.bias": rng.normal(scale=0.1, size=hidden).astype(f32),
        "bn1.weight": rng.uniform(0.5, 2.0, size=hidden).astype(f32),
        "bn1.bias": rng.normal(scale=0.5, size=hidden).astype(f32),
        "bn1.running_mean": rng.normal(scale=0.3, size=hidden).astype(f32),
        "bn1.running_var": rng.uniform(0.05, 3.0, size=hidden).astype(f32),
        "bn1.num_batches_tracked": np.array(1234, dtype=np.int64),
        "output_layer.weight": (rng.normal(size=(2, hidden)) / np.sqrt(hidden) * 4).astype(f32),
        "output_layer.bias": rng.normal(scale=0.1, size=2).astype(f32),
    }


def torch_reference(state: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    """The same module in torch, eval mode, softmax, evaluated in float64: the numbers to match.

    float64 so that the reference does not carry the rounding of whatever float32 kernel this
    machine's torch picks (that differs between CPUs by ~1e-6 at width 3328); our classifier also
    computes in float64 and rounds each probability to float32 once (tolerances.py)."""
    hidden, width = state["hidden_layer.weight"].shape
    model = nn.Sequential(
        nn.Linear(width, hidden), nn.BatchNorm1d(hidden), nn.ReLU(), nn.Dropout(0.5),
        nn.Linear(hidden, 2),
    )
    rename = {"hidden_layer": "0", "bn1": "1", "output_layer": "4"}
    model.load_state_dict(
        {rename[k.split(".")[0]] + "." + k.split(".", 1)[1]: torch.from_numpy(np.array(v))
         for k, v in state.items()}
    )
    model.double().eval()
    with torch.no_grad():
        return torch.softmax(model(torch.from_numpy(x).double()), dim=1).numpy()


def features(n: int, width: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).normal(scale=0.5, size=(n, width)).astype(np.float32)


def run_original(*args: str, cwd: Path) -> None:
    script = cwd / "original_mlp.py"
    script.write_text(ORIGINAL_SAVE_SCRIPT)
    subprocess.run([sys.executable, str(script), *args], cwd=cwd, check=True, timeout=120)


@pytest.fixture(scope="module")
def state3328() -> dict[str, np.ndarray]:
    return random_state(3328)


def test_numerics_match_torch(state3328: dict[str, np.ndarray]) -> None:
    x = features(512, 3328)
    clf = Classifier(state3328)
    got = clf.predict_proba(x)
    want = torch_reference(state3328, x)
    assert got.dtype == np.float32 and got.shape == (512, 2)
    assert np.abs(got - want).max() <= float32_result_bound(state3328, x)
    assert np.array_equal(got.argmax(1), want.argmax(1))
    # Both classes occur, so the comparison says something about the decision too.
    assert 0 < (got[:, 1] > got[:, 0]).sum() < 512
    assert clf.input_width == 3328 and clf.hidden_width == 512


@pytest.mark.server
def test_published_format_from_a_main_script(tmp_path: Path) -> None:
    state = random_state(40, hidden=16, seed=3)
    torch.save({k: torch.from_numpy(np.array(v)) for k, v in state.items()}, tmp_path / "s.pt")
    run_original("save", "s.pt", "500_model.pth", cwd=tmp_path)
    with zipfile.ZipFile(tmp_path / "500_model.pth") as zf:
        assert b"__main__\nMLPClassifier" in zf.read("500_model/data.pkl")

    clf = load_classifier(tmp_path / "500_model.pth")
    assert clf.input_width == 40
    for key, value in state.items():
        assert np.array_equal(clf.state_dict()[key], value), key
    x = features(64, 40)
    assert np.abs(clf.predict_proba(x) - torch_reference(state, x)).max() <= float32_result_bound(
        state, x)
    assert len(clf.sha256) == 64


@pytest.mark.server
def test_save_classifier_pth_is_readable_by_the_original_tool(tmp_path: Path) -> None:
    state = random_state(24, hidden=8, seed=5)
    path = tmp_path / "300_model.pth"
    save_classifier_pth({k: torch.from_numpy(np.array(v)) for k, v in state.items()}, path)
    assert not hasattr(sys.modules["__main__"], "MLPClassifier")  # temporary export undone

    with zipfile.ZipFile(path) as zf:
        assert b"__main__\nMLPClassifier" in zf.read("300_model/data.pkl")
    x = features(32, 24)
    torch.save(torch.from_numpy(x), tmp_path / "x.pt")
    run_original("predict", "300_model.pth", "x.pt", "p.pt", cwd=tmp_path)
    original = torch.load(tmp_path / "p.pt", weights_only=True).numpy()

    clf = load_classifier(path)
    # The original evaluates in float32 with this machine's torch kernels: its own rounding
    # (bounded for these magnitudes and sum lengths in tolerances.py) plus our final rounding.
    bound = mlp_probability_bound(state, x) + float32_result_bound(state, x)
    assert np.abs(clf.predict_proba(x) - original).max() <= bound
    assert np.array_equal(clf.state_dict()["bn1.running_var"], state["bn1.running_var"])


def test_plain_state_dict_pth_loads(tmp_path: Path) -> None:
    state = random_state(16, hidden=8)
    torch.save({k: torch.from_numpy(np.array(v)) for k, v in state.items()}, tmp_path / "sd.pth")
    x = features(8, 16)
    got = load_classifier(tmp_path / "sd.pth").predict_proba(x)
    assert np.abs(got - torch_reference(state, x)).max() <= float32_result_bound(state, x)


def test_non_contiguous_tensor_is_rebuilt_with_strides(tmp_path: Path) -> None:
    state = random_state(12, hidden=6)
    tensors = {k: torch.from_numpy(np.array(v)) for k, v in state.items()}
    # A transposed view: storage order differs from logical order, so strides matter.
    tensors["hidden_layer.weight"] = torch.from_numpy(np.ascontiguousarray(state[
        "hidden_layer.weight"].T)).t()
    assert not tensors["hidden_layer.weight"].is_contiguous()
    torch.save(tensors, tmp_path / "t.pth")
    loaded = load_classifier(tmp_path / "t.pth").state_dict()["hidden_layer.weight"]
    assert np.array_equal(loaded, state["hidden_layer.weight"])


def test_safetensors_loads(tmp_path: Path) -> None:
    state = random_state(20, hidden=8, seed=7)
    save_classifier_safetensors(state, tmp_path / "m.safetensors")
    clf = load_classifier(tmp_path / "m.safetensors")
    x = features(16, 20)
    assert np.abs(clf.predict_proba(x) - torch_reference(state, x)).max() <= float32_result_bound(
        state, x)


def test_pth_and_safetensors_give_identical_scores(tmp_path: Path) -> None:
    state = random_state(30, hidden=10, seed=9)
    save_classifier_pth(state, tmp_path / "a.pth")
    save_classifier_safetensors(state, tmp_path / "a.safetensors")
    x = features(50, 30)
    a = load_classifier(tmp_path / "a.pth").predict_proba(x)
    b = load_classifier(tmp_path / "a.safetensors").predict_proba(x)
    assert np.array_equal(a, b)


def test_check_widths(state3328: dict[str, np.ndarray]) -> None:
    clf = Classifier(state3328, source="500_model.pth")
    clf.check_widths(768, 2560)
    with pytest.raises(ClassifierError) as err:
        clf.check_widths(768, 1280)
    msg = str(err.value)
    assert "3328" in msg and "768" in msg and "1280" in msg and "2048" in msg
    with pytest.raises(ClassifierError, match="3328"):
        clf.predict_proba(np.zeros((3, 2048), np.float32))


def test_missing_and_unexpected_keys_are_listed(tmp_path: Path) -> None:
    from safetensors.numpy import save_file

    state = random_state(8, hidden=4)
    del state["bn1.running_var"]
    del state["output_layer.bias"]
    state["fc9.weight"] = np.zeros(3, np.float32)
    save_file(state, str(tmp_path / "bad.safetensors"))
    with pytest.raises(ClassifierError) as err:
        load_classifier(tmp_path / "bad.safetensors")
    msg = str(err.value)
    assert "bad.safetensors" in msg
    assert "missing keys: bn1.running_var, output_layer.bias" in msg
    assert "unexpected keys: fc9.weight" in msg


def test_wrong_shapes_are_named() -> None:
    state = random_state(8, hidden=4)
    state["bn1.running_mean"] = np.zeros(5, np.float32)
    state["output_layer.weight"] = np.zeros((3, 4), np.float32)
    with pytest.raises(ClassifierError) as err:
        Classifier(state)
    assert "bn1.running_mean (5,)" in str(err.value)
    assert "output_layer.weight (3, 4)" in str(err.value)


def test_num_batches_tracked_is_optional() -> None:
    state = random_state(8, hidden=4)
    del state["bn1.num_batches_tracked"]
    assert Classifier(state).input_width == 8


# --------------------------------------------------------------------------- hostile files


def _torch_zip(path: Path, data_pkl: bytes) -> None:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", data_pkl)
        zf.writestr("archive/byteorder", "little")
        zf.writestr("archive/version", "3\n")


class _Touch:
    """Unpickling this runs a shell command (pickled as posix.system)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # noqa: ANN204
        return (os.system, (f"touch {self.marker}",))


def _hostile_payloads(marker: Path) -> dict[str, tuple[bytes, str]]:
    """name -> (pickle bytes that would create `marker`, the global that must be named)."""
    cmd = f"touch {marker}".encode()
    reduced = pickle.dumps(_Touch(marker), protocol=2)
    system_name = f"{os.system.__module__}.system"
    return {
        "os.system": (b"cos\nsystem\n(S'" + cmd + b"'\ntR.", "os.system"),
        "builtins.exec": (
            b"cbuiltins\nexec\n(S'open(\"" + str(marker).encode() + b"\", \"w\").close()'\ntR.",
            "builtins.exec",
        ),
        "reduce": (reduced, system_name),
        "subprocess": (
            b"csubprocess\ncall\n((S'touch'\nS'" + str(marker).encode() + b"'\nltR.",
            "subprocess.call",
        ),
    }


@pytest.mark.parametrize("name", ["os.system", "builtins.exec", "reduce", "subprocess"])
def test_hostile_torch_zip_is_refused_and_nothing_runs(tmp_path: Path, name: str) -> None:
    marker = tmp_path / "pwned"
    payload, global_name = _hostile_payloads(marker)[name]
    _torch_zip(tmp_path / "evil.pth", payload)
    with pytest.raises(ClassifierError) as err:
        load_classifier(tmp_path / "evil.pth")
    assert global_name in str(err.value)
    assert "evil.pth" in str(err.value)
    assert not marker.exists()


@pytest.mark.parametrize("name", ["os.system", "builtins.exec", "reduce"])
def test_hostile_bare_pickle_is_refused_and_nothing_runs(tmp_path: Path, name: str) -> None:
    marker = tmp_path / "pwned"
    payload, global_name = _hostile_payloads(marker)[name]
    (tmp_path / "evil.pth").write_bytes(payload)
    with pytest.raises(ClassifierError, match=global_name.replace(".", r"\.")):
        load_classifier(tmp_path / "evil.pth")
    assert not marker.exists()


def test_hostile_global_inside_a_real_module_pickle(tmp_path: Path) -> None:
    """A genuine classifier pickle with one hook dict swapped for a shell call deep inside."""
    save_classifier_pth(random_state(8, hidden=4), tmp_path / "ok.pth")
    with zipfile.ZipFile(tmp_path / "ok.pth") as zf:
        entries = {n: zf.read(n) for n in zf.namelist()}
    pkl = entries["ok/data.pkl"]
    assert b"ccollections\nOrderedDict\n" in pkl
    entries["ok/data.pkl"] = pkl.replace(b"ccollections\nOrderedDict\n", b"cposix\nsystem\n", 1)
    with zipfile.ZipFile(tmp_path / "evil.pth", "w") as zf:
        for n, data in entries.items():
            zf.writestr(n.replace("ok/", "evil/", 1), data)
    with pytest.raises(ClassifierError, match=r"forbidden global posix\.system"):
        load_classifier(tmp_path / "evil.pth")


def test_other_module_class_is_refused(tmp_path: Path) -> None:
    """Only the classifier's own module classes are allowed, not arbitrary torch modules."""
    model = nn.Sequential(nn.Linear(4, 2))
    torch.save(model, tmp_path / "seq.pth")
    with pytest.raises(ClassifierError, match="torch.nn.modules.container.Sequential"):
        load_classifier(tmp_path / "seq.pth")


def test_legacy_torch_file_is_refused_clearly(tmp_path: Path) -> None:
    state = {k: torch.from_numpy(np.array(v)) for k, v in random_state(8, hidden=4).items()}
    torch.save(state, tmp_path / "old.pth", _use_new_zipfile_serialization=False)
    with pytest.raises(ClassifierError, match="legacy"):
        load_classifier(tmp_path / "old.pth")


def test_storage_bounds_are_checked(tmp_path: Path) -> None:
    """A tensor record claiming more elements than its storage holds is refused, not read."""
    save_classifier_pth(random_state(8, hidden=4), tmp_path / "ok.pth")
    with zipfile.ZipFile(tmp_path / "ok.pth") as zf:
        entries = {n: zf.read(n) for n in zf.namelist()}
    # Truncate every storage file: the pickle still claims the full sizes.
    with zipfile.ZipFile(tmp_path / "short.pth", "w") as zf:
        for n, data in entries.items():
            zf.writestr(n.replace("ok/", "short/", 1), data[:4] if "/data/" in n else data)
    with pytest.raises(ClassifierError, match="shorter"):
        load_classifier(tmp_path / "short.pth")


@pytest.mark.parametrize(
    "content, match",
    [(b"", "not a classifier"), (b"hello world\n", "not a classifier"),
     (b"PK\x03\x04garbage", "not a classifier")],
)
def test_garbage_files(tmp_path: Path, content: bytes, match: str) -> None:
    (tmp_path / "x.pth").write_bytes(content)
    with pytest.raises(ClassifierError, match=match):
        load_classifier(tmp_path / "x.pth")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ClassifierError, match="cannot read"):
        load_classifier(tmp_path / "nope.pth")


def test_zip_without_data_pkl(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("a.txt", "x")
    (tmp_path / "z.pth").write_bytes(buf.getvalue())
    with pytest.raises(ClassifierError, match="data.pkl"):
        load_classifier(tmp_path / "z.pth")


REAL_500 = os.environ.get("VIRNUCPRO_REAL_500_MODEL")


@pytest.mark.skipif(not REAL_500, reason="set VIRNUCPRO_REAL_500_MODEL to the published 500_model.pth")
def test_real_classifier_reproduces_original_predictions() -> None:
    """The published 500_model.pth on the original tool's own features gives its own scores."""
    ref = GOLDEN / "broad_fixtures" / "reference_vanilla_output"
    merged = torch.load(ref / "output_1_merged.pt", weights_only=True)
    clf = load_classifier(REAL_500)
    probs = clf.predict_proba(merged["data"].numpy())
    rows = (ref / "prediction_results.txt").read_text().splitlines()[1:]
    by_id = {r.split("\t")[0]: r.split("\t") for r in rows}
    # The original ran in float32 on its own kernels: its rounding for these weights and features
    # (tolerances.py) plus ours. Its printed scores are float32 reprs, exact to the float.
    bound = (mlp_probability_bound(clf.state_dict(), merged["data"].numpy())
             + float32_result_bound(clf.state_dict(), merged["data"].numpy()))
    for fid, p in zip(merged["ids"], probs, strict=True):
        _, label, s1, s2 = by_id[fid]
        assert abs(p[0] - float(s1)) <= bound and abs(p[1] - float(s2)) <= bound
        assert label == ("virus" if p[1] > p[0] else "others")


def test_pickle_cannot_alter_the_allowed_stand_ins(tmp_path: Path) -> None:
    """BUILD on an allowed global (to poison it for later loads) is refused; later loads are fine."""
    poison = b"ctorch\nFloatStorage\n}S'name'\nS'BFloat16Storage'\nsb."
    _torch_zip(tmp_path / "poison.pth", poison)
    with pytest.raises(ClassifierError, match="modify"):
        load_classifier(tmp_path / "poison.pth")
    state = random_state(8, hidden=4)
    save_classifier_pth(state, tmp_path / "ok.pth")
    loaded = load_classifier(tmp_path / "ok.pth").state_dict()
    assert np.array_equal(loaded["hidden_layer.weight"], state["hidden_layer.weight"])


def test_reader_matches_torch_on_the_original_tools_own_files() -> None:
    """The vanilla tool's saved embeddings (real torch files, views into shared storages)."""
    from orchestrator.classify.unpickler import unpickle_torch_zip

    ref = GOLDEN / "broad_fixtures" / "reference_vanilla_output"
    for name, key in (("output_1_merged.pt", "ids"), ("output_1_ESM.pt", "proteins")):
        path = ref / name
        ours = unpickle_torch_zip(path, path.read_bytes())
        theirs = torch.load(path, weights_only=True)
        assert ours[key] == theirs[key]
        data = ours["data"] if isinstance(ours["data"], list) else [ours["data"]]
        want = theirs["data"] if isinstance(theirs["data"], list) else [theirs["data"]]
        assert len(data) == len(want)
        for a, b in zip(data, want, strict=True):
            assert a.dtype == np.float32 and np.array_equal(a, b.numpy())


@pytest.mark.server
def test_loading_needs_no_torch(tmp_path: Path) -> None:
    """The orchestrator runs without torch: loading and predicting must not import it."""
    state = random_state(12, hidden=6)
    save_classifier_pth(state, tmp_path / "m.pth")
    save_classifier_safetensors(state, tmp_path / "m.safetensors")
    code = textwrap.dedent(
        f"""
        import sys
        sys.modules["torch"] = None  # any 'import torch' now raises ImportError
        import numpy as np
        from orchestrator.classify.classifier import load_classifier
        import orchestrator.write.formats
        a = load_classifier({str(tmp_path / "m.pth")!r}).predict_proba(np.ones((3, 12), np.float32))
        b = load_classifier({str(tmp_path / "m.safetensors")!r}).predict_proba(
            np.ones((3, 12), np.float32))
        assert np.array_equal(a, b)
        print("ok")
        """
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_empty_batch() -> None:
    clf = Classifier(random_state(8, hidden=4))
    assert clf.predict_proba(np.zeros((0, 8), np.float32)).shape == (0, 2)
