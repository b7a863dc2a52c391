"""Ensembles from what the search trained (issue 40, item 2): Caruana's selection over a real search's models from its
artifact store, recorded in the study, refused when it is noise, exported as one ONNX graph, shown by the report;
and the benchmark's scoring of any weighted set of models on the test split."""

from __future__ import annotations

import io
import json
import sqlite3
import subprocess
from pathlib import Path

import numpy as np
import onnxruntime as ort
import optuna
import pytest
import torch
from optuna.artifacts import download_artifact, get_all_artifact_meta
from optuna.trial import TrialState

from segtune.data import build_dataset
from segtune.spec import validate
from segtune.training import checkpoint
from tests.conftest import segtune
from tests.test_trust import lesion_folder

pytestmark = pytest.mark.e2e

MEAN = np.array([0.485, 0.456, 0.406], np.float32).reshape(1, 3, 1, 1) * 255
STD = np.array([0.229, 0.224, 0.225], np.float32).reshape(1, 3, 1, 1) * 255


@pytest.fixture(scope="module")
def ensembled(searched, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, subprocess.CompletedProcess]:
    """`segtune ensemble` on a copy of the shared search, as on a machine that does not see the trials' run folder:
    every model comes from the study's artifact store."""
    tmp = tmp_path_factory.mktemp("ensembled")
    source, copy = sqlite3.connect(searched[0] / "store.db"), sqlite3.connect(tmp / "store.db")
    source.backup(copy)  # SQLite's backup: the store runs in WAL mode
    copy.execute("UPDATE trial_user_attributes SET value_json = ? WHERE key = 'checkpoint'", (json.dumps("/gone"),))
    copy.commit()
    source.close(), copy.close()
    url = f"sqlite:///{tmp / 'store.db'}"
    proc = segtune("ensemble", "e2e", "--storage", url, "--pruned-floor", "0.5", cwd=tmp)
    return tmp, url, proc


def val_data(study: optuna.Study):  # noqa: ANN201
    dataset = {**study.user_attrs["spec"]["dataset"], "allow_missing_classes": True}
    return build_dataset(validate({"study": "t", "dataset": dataset}, source="test").dataset)


def stored_model(study: optuna.Study, number: int, folder: Path) -> torch.nn.Module:
    """Trial ``number``'s model straight from the artifact store, with Optuna's own calls."""
    from optuna.artifacts import FileSystemArtifactStore

    meta = next(
        m for m in get_all_artifact_meta(study.trials[number], storage=study._storage) if m.filename == "model.pt"
    )
    target = folder / f"trial{number}.pt"
    download_artifact(
        artifact_store=FileSystemArtifactStore(study.user_attrs["artifacts"]),
        file_path=str(target),
        artifact_id=meta.artifact_id,
    )
    return checkpoint.load(target)[0]


def weighted_softmax(models: list[tuple[torch.nn.Module, float]], images: np.ndarray) -> np.ndarray:
    """The weighted mean of the models' softmax over uint8 N x H x W x 3 canvases, written here, not segtune's."""
    x = torch.from_numpy((images.transpose(0, 3, 1, 2).astype(np.float32) - MEAN) / STD)
    total = sum(w for _, w in models)
    with torch.no_grad():
        return sum(w / total * torch.softmax(m(x), 1).numpy() for m, w in models)


def miou(pred: np.ndarray, target: np.ndarray, classes: int) -> float:
    """Mean IoU over the classes in the target or the prediction, the padding (255) left out."""
    keep = target != 255
    cm = np.bincount(target[keep].astype(np.int64) * classes + pred[keep], minlength=classes * classes)
    cm = cm.reshape(classes, classes)
    tp, union = np.diag(cm), cm.sum(0) + cm.sum(1) - np.diag(cm)
    return float(np.mean(tp[union > 0] / union[union > 0]))


def test_the_selection_is_recorded_and_its_val_is_what_its_members_predict(ensembled, tmp_path: Path) -> None:
    tmp, url, proc = ensembled
    study = optuna.load_study(study_name="e2e", storage=url)
    record = study.user_attrs["ensemble"]
    members = [(m["trial"], m["weight"]) for m in record["members"]]
    ended = {t.number for t in study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))}
    assert members and all(n in ended and isinstance(w, int) and w >= 1 for n, w in members)
    assert len({n for n, _ in members}) == len(members)
    lines = proc.stdout.splitlines()
    assert "weight" in next(ln for ln in lines if ln.startswith("model "))  # the table's header
    for n, w in members:
        assert any(ln.startswith(f"trial {n} ") and f" {w} " in ln for ln in lines)
    assert ("KEPT" if record["kept"] else "not kept") in proc.stdout and "recorded in study 'e2e'" in proc.stdout

    # the ensemble's val, and the best single's, from the members' own predictions on the val canvases
    data = val_data(study)
    val = data.splits["val"]
    models = {n: stored_model(study, n, tmp_path) for n, _ in members}
    probs = weighted_softmax([(models[n], float(w)) for n, w in members], data.images[val])
    assert record["val_ensemble"] == pytest.approx(miou(probs.argmax(1), data.masks[val], data.num_classes), abs=1e-4)
    single = int(record["best_single"].removeprefix("trial "))
    alone = weighted_softmax([(models.get(single) or stored_model(study, single, tmp_path), 1.0)], data.images[val])
    assert record["val_best_single"] == pytest.approx(
        miou(alone.argmax(1), data.masks[val], data.num_classes), abs=1e-4
    )
    assert record["gain"] == pytest.approx(record["val_ensemble"] - record["val_best_single"], abs=1e-9)
    # kept exactly when its held-out gain's lower 5% quantile is above 0, and it is more than one model
    low, high = record["heldout_interval"]
    assert low <= record["heldout_gain"] <= high
    assert record["kept"] == (low > 0 and len(members) >= 2)
    assert record["latency_ms"] > 0 and record["size_mb"] > 1 and record["pictures"] == len(val)


def test_export_model_ensemble_writes_one_graph_that_agrees_with_pytorch(ensembled, tmp_path: Path) -> None:
    tmp, url, _ = ensembled
    out = tmp_path / "ensemble.onnx"
    printed = segtune("export-model", "e2e", "--ensemble", "--storage", url, "-o", str(out), cwd=tmp).stdout
    assert "exporting search ensemble of study 'e2e'" in printed and "argmax agreement" in printed
    assert "latency, median ms per image" in printed
    study = optuna.load_study(study_name="e2e", storage=url)
    members = [(m["trial"], m["weight"]) for m in study.user_attrs["ensemble"]["members"]]
    import onnx

    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert [(m["trial"], m["weight"]) for m in json.loads(meta["ensemble"])] == members
    assert meta["output"].startswith("probabilities" if len(members) > 1 else "logits")

    data = val_data(study)
    images = data.images[data.splits["val"]]
    expected = weighted_softmax([(stored_model(study, n, tmp_path), float(w)) for n, w in members], images)
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    got = session.run(None, {"image": np.ascontiguousarray(images.transpose(0, 3, 1, 2))})[0]
    if len(members) == 1:
        got = torch.softmax(torch.from_numpy(got), 1).numpy()
    assert (got.argmax(1) == expected.argmax(1)).mean() >= 0.999 and np.abs(got - expected).max() < 1e-4
    assert len(np.unique(expected.argmax(1))) >= 2, "a model predicting one class would agree trivially"


def test_the_report_shows_the_ensemble(ensembled, tmp_path: Path) -> None:
    tmp, url, _ = ensembled
    html = tmp_path / "r.html"
    segtune("report", "e2e", "--storage", url, "-o", str(html), cwd=tmp)
    text = html.read_text()
    record = optuna.load_study(study_name="e2e", storage=url).user_attrs["ensemble"]
    taken = " + ".join(f"{m['weight']} x {m['label']}" for m in record["members"])
    assert f"Ensemble of the search&#x27;s models ({'kept' if record['kept'] else 'not kept'}): {taken}" in text
    assert f"val gain {record['gain']:+.4f}" in text and "Ensemble: what was chosen, and why" in text


def test_copies_of_one_model_are_not_kept(searched, tmp_path: Path) -> None:
    """Four copies of the search's best model, three with their weights shaken a little: they differ, so the greedy
    selection may find a val gain, but it is val's noise and the ensemble is refused."""
    from segtune.results.ensemble import select_checkpoints

    study = optuna.load_study(study_name="e2e", storage=f"sqlite:///{searched[0] / 'store.db'}")
    best = max(study.get_trials(states=(TrialState.COMPLETE,)), key=lambda t: t.value)
    base = Path(best.user_attrs["checkpoint"], "model.pt")
    payload = torch.load(base, weights_only=True)
    paths = [base]
    for k in range(1, 4):
        noise = torch.Generator().manual_seed(k)
        state = {
            name: t * (1 + 0.05 * torch.randn(t.shape, generator=noise)) if t.is_floating_point() else t
            for name, t in payload["state_dict"].items()
        }
        paths.append(tmp_path / f"copy{k}.pt")
        torch.save({**payload, "state_dict": state}, paths[-1])
    printed = io.StringIO()
    selection = select_checkpoints(paths, study.user_attrs["spec"]["dataset"], out=printed)
    assert len(selection.candidates) == 4 and "val probabilities" in printed.getvalue()
    assert not selection.kept and "not kept" in selection.summary()
    assert selection.heldout_interval is not None and selection.heldout_interval[0] <= 0
    if len(selection.members) > 1:
        assert "within the noise" in selection.reason
    else:
        assert "no addition raised" in selection.reason


def test_evaluate_scores_a_model_on_test_as_retrain_does_and_ensembles_retrains(tmp_path: Path) -> None:
    """The benchmark's scoring: `evaluate` of one retrained model gives the test figures `retrain` wrote (each
    picture at its own size); two retrains are selected on val like a study's trials."""
    from segtune.results.ensemble import evaluate, select_checkpoints

    root = tmp_path / "lesions"
    lesion_folder(root, n=32)
    dataset = {
        "name": "folder",
        "root": str(root),
        "classes": ["skin", "lesion"],
        "image_size": [32, 48],  # the pictures are 48 x 64: scored at their own size, not the canvas
        "split": {"val": 0.25, "test": 0.25, "seed": 1},
    }
    runs = []
    for seed in (0, 1):
        spec = tmp_path / f"retrain{seed}.yaml"
        config = {"arch": "SmallUNet", "augment": "none", "lr": 0.01, "batch_size": 4}
        spec.write_text(json.dumps({"name": "les", "dataset": dataset, "config": config, "epochs": 2, "seed": seed}))
        segtune("retrain", str(spec), "--out", str(tmp_path / f"run{seed}"), cwd=tmp_path)
        runs.append(tmp_path / f"run{seed}")
    written = json.loads((runs[0] / "metrics.json").read_text())
    score = evaluate([(runs[0] / "model.pt", 1.0)], dataset, "test")
    assert score.miou == pytest.approx(written["test_miou"], abs=1e-9)
    assert score.dice == pytest.approx(written["test_dice"], abs=1e-9) and score.images == written["test_images"]
    assert score.resolution == written["test_resolution"]

    selection = select_checkpoints([r / "model.pt" for r in runs], out=io.StringIO())  # the dataset they record
    assert {c.label for c in selection.candidates} == {str(r / "model.pt") for r in runs}
    both = evaluate(selection.weighted_paths(), dataset, "test")
    assert 0 <= both.miou <= 1 and both.images == written["test_images"]


def test_a_complete_trial_on_a_schedule_cut_short_is_held_to_the_floor(searched, tmp_path: Path) -> None:
    """A complete trial that ran the whole schedule is a candidate whatever its value; one whose schedule an exact
    budget cut short (its ``epochs_planned``, a few epochs at the budget's end) is a short training, held to the floor
    pruned trials meet: CamVid's K = 10 search took a 1-epoch trial at val 0.16 three times, fitting val's noise."""
    from segtune.results.ensemble import study_candidates

    source, copy = sqlite3.connect(searched[0] / "store.db"), sqlite3.connect(tmp_path / "store.db")
    source.backup(copy)
    url = f"sqlite:///{tmp_path / 'store.db'}"
    study = optuna.load_study(study_name="e2e", storage=url)
    complete = sorted(study.get_trials(states=(TrialState.COMPLETE,)), key=lambda t: t.value, reverse=True)
    assert len(complete) >= 3, "the shared search has complete trials to choose from"
    before, _ = study_candidates(study, pruned_floor=0.999)  # every complete trial but the best is below this floor
    assert {c.number for c in complete} <= {c.trial for c in before}, "complete trials are candidates at any value"
    cut = complete[-1]  # the weakest complete trial: as if the budget had cut its schedule
    copy.execute(
        "INSERT INTO trial_user_attributes (trial_id, key, value_json) VALUES (?, 'epochs_planned', ?)",
        (cut._trial_id, json.dumps(len(cut.intermediate_values))),
    )
    copy.commit()
    source.close(), copy.close()
    study = optuna.load_study(study_name="e2e", storage=url)
    after, notes = study_candidates(study, pruned_floor=0.999)
    assert {c.trial for c in after} == {c.trial for c in before} - {cut.number}
    assert any("cut short" in n for n in notes), notes
    assert cut.number in {c.trial for c in study_candidates(study, pruned_floor=0.0)[0]}, "above the floor it stays"
    assert cut.value < 0.95 * complete[0].value  # the shared search's weakest complete trial, well below its best
    no_pruned = {c.trial for c in study_candidates(study, pruned_floor=None)[0]}
    assert cut.number not in no_pruned, "--no-pruned keeps the default floor for cut-short trials"
    assert no_pruned == {c.number for c in complete} - {cut.number}, "and takes no pruned trial"


def test_bad_ensemble_requests_are_one_line_and_exit_2(searched, tmp_path: Path) -> None:
    url = f"sqlite:///{searched[0] / 'store.db'}"  # read only: nothing here writes to the shared search
    cases = [
        (
            ["export-model", "e2e", "--ensemble", "--storage", url],
            "study 'e2e' has no ensemble yet: run `segtune ensemble e2e`",
        ),
        (["ensemble", "e2e", "--storage", url, "--budget-mb", "0"], "--budget-mb: must be above 0"),
        (["ensemble", "e2e", "--storage", url, "--max-candidates", "0"], "--max-candidates: at least 1"),
        (["ensemble", "nosuch", "--storage", url], "study 'nosuch' is not in the store"),
    ]
    for args, says in cases:
        proc = segtune(*args, cwd=tmp_path, check=False)
        assert proc.returncode == 2 and says in proc.stderr and "Traceback" not in proc.stderr, (args, proc.stderr)
    assert "ensemble" not in optuna.load_study(study_name="e2e", storage=url).user_attrs
