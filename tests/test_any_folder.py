"""Any folder people have (issue 31): `init` -> `check` -> `run` on the layouts real datasets ship, with no hand
edit, and the spec's classes, reading and pairs equal to what each fixture holds; the masks decoded hold the
fixture's foreground where it was drawn."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np
import optuna
import pytest
import ray
import yaml
from PIL import Image

from segtune import cli
from segtune import spec as spec_mod
from segtune.check import check, check_dataset
from segtune.data import build_dataset
from segtune.data.base import MaskReading, Record, read_mask, read_pair
from segtune.data.labels import IGNORE_INDEX, LossyLevels, ValueCensus
from segtune.data.resize import ResizePolicy
from segtune.data.splitfiles import match_ids, read_split_file
from segtune.errors import DataError, SpecError
from segtune.spec import num_classes
from tests import layouts
from tests.conftest import ONE_AT_A_TIME, REPO, segtune

KVASIR = REPO.parent / "shared" / "datasets" / "kvasir-seg"


@pytest.fixture(scope="module")
def ray_cluster() -> object:
    """One private local Ray cluster for the module's runs (what `segtune run` starts, started once)."""
    import ray

    from segtune.search.nodes.cluster import connect_ray

    connect_ray(None, local_cpus=1)  # the runs take one trial at a time (ONE_AT_A_TIME), and so a cluster of one CPU
    yield
    ray.shutdown()


def decoded_class(written: dict, expected: layouts.Expected, cls: int) -> int:
    """The class a drawn class decodes to: itself, or for colour codes the class of the nearest colour the spec
    names (init numbers colours in their order)."""
    if cls not in expected.colours:
        return cls
    nearest = min(
        written["colors"].items(),
        key=lambda kv: sum((int(v) - c) ** 2 for v, c in zip(kv[0].split(","), expected.colours[cls], strict=True)),
    )
    return int(nearest[1])


def foreground_iou(data: object, expected: layouts.Expected, written: dict) -> float:
    """The worst IoU, over pictures and classes, between a decoded mask and the fixture's drawn regions (pixels
    decoded as ignore left out)."""
    worst = 1.0
    for mask, (h, w) in zip(data.masks, data.content, strict=True):
        truth = layouts.label_map(h, w, expected.foreground)
        got = mask[:h, :w]
        valid = got != IGNORE_INDEX
        for cls in expected.foreground:
            a, b = (got == decoded_class(written, expected, cls)) & valid, (truth == cls) & valid
            worst = min(worst, (a & b).sum() / max(1, (a | b).sum()))
    return worst


def init_in(root: Path, tmp: Path, capsys: pytest.CaptureFixture[str]) -> tuple[Path, str]:
    out = tmp / f"{root.name}.yaml"
    assert cli.main(["init", str(root), "-o", str(out)]) == 0, capsys.readouterr().err
    return out, capsys.readouterr().out


def run_in(spec: Path, tmp: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> optuna.Study:
    """`segtune run` (the same main the command calls, in this process: its Ray cluster is the module's)."""
    storage = f"sqlite:///{tmp / 'runs.db'}"
    args = ["run", str(spec), "--storage", storage, "--set", "search.trials=2", "--set", "search.max_epochs=1"]
    args += ONE_AT_A_TIME
    args += ["--set", "search.grace_period=1", "--set", f"results_dir={tmp / 'runs'}", *extra]
    assert cli.main(args) == 0, capsys.readouterr().err
    assert ray.is_initialized(), "the run ended the module's Ray connection, which it did not make"
    # nothing of this run stays in the environment for the next, or for the processes this test worker starts
    assert "TUNE_MAX_PENDING_TRIALS_PG" not in os.environ
    return optuna.load_study(study_name=spec_mod.load(spec).study, storage=storage)


# The conventions whose spec also goes through a real search. A trial trains on the data the driver decoded with
# build_dataset (asserted above for every convention), so a run adds the spec's path through `run`: these four hold
# every kind of reading init writes (folders, colours, split files, lossy masks, mask resize) and 2 and 3 classes.
# A run is about 20 s here, mostly its trial worker's start; all fourteen made this the suite's slowest file.
RUN = {"object-set", "field-set", "split-conflict", "jpeg-colours"}


@pytest.mark.e2e
@pytest.mark.parametrize("name", list(layouts.CONVENTIONS))
def test_init_check_run_read_each_convention_as_it_ships(
    name: str, tmp_path: Path, ray_cluster: object, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / name
    expected = layouts.CONVENTIONS[name](root, np.random.default_rng(3))
    path, printed = init_in(root, tmp_path, capsys)
    text = path.read_text()
    written = yaml.safe_load(text)["dataset"]
    for key, value in expected.read.items():  # the reading init proposed: value map, lossy, resize, split, files
        assert written.get(key) == value, (key, written.get(key), printed)
    if expected.choice:  # what it did not pick is a CHOICE comment naming the line to switch to
        assert any("CHOICE" in line and expected.choice in line for line in text.splitlines()), text
    spec = spec_mod.load(path)
    assert num_classes(spec.dataset) == expected.classes

    buf = io.StringIO()  # `segtune check`'s dataset half (its model half builds the same space for every fixture)
    assert check_dataset(spec, buf)["images"] == expected.pairs, buf.getvalue()
    if expected.lossy:
        assert "lossy masks, train:" in buf.getvalue() and "off-level" in buf.getvalue()

    data = build_dataset(spec.dataset)
    assert len(data.names) == expected.pairs
    assert foreground_iou(data, expected, written) >= (0.8 if expected.lossy else 0.99)

    assert RUN.issubset(layouts.CONVENTIONS)  # a name mistyped here would drop its run without a word
    if name not in RUN:
        return
    study = run_in(path, tmp_path, capsys, "--set", "dataset.image_size=64")
    states = [t.state for t in study.trials]
    assert states == [optuna.trial.TrialState.COMPLETE] * 2, [t.user_attrs.get("fail_reason") for t in study.trials]


@pytest.mark.e2e
def test_kvasir_seg_as_it_ships(tmp_path: Path, ray_cluster: object, capsys: pytest.CaptureFixture[str]) -> None:
    """998 polyp pictures with JPEG masks (RGB, grey levels around 0 and 255): two classes, read lossy, never 256."""
    assert (KVASIR / "masks").is_dir(), f"Kvasir-SEG is expected at {KVASIR} (../shared/datasets beside the checkout)"
    path, printed = init_in(KVASIR, tmp_path, capsys)
    ds = yaml.safe_load(path.read_text())["dataset"]
    assert ds["classes"] == ["background", "foreground"] and ds["values"] == {0: 0, 255: 1}
    assert ds["lossy_masks"] == "nearest" and "dataset.lossy_masks: nearest: the 998 masks are lossy" in printed
    assert "998 pairs" in printed
    # the polyp share init reports, against a count made here: every mask pixel thresholded at 128
    polyp = total = 0
    for mask in sorted((KVASIR / "masks").glob("*.jpg")):
        grey = np.asarray(Image.open(mask).convert("L"))
        polyp, total = polyp + int((grey >= 128).sum()), total + grey.size
    reported = float(next(line for line in printed.splitlines() if line.startswith("foreground")).split()[1][:-1])
    assert abs(reported / 100 - polyp / total) < 0.005, (reported, polyp / total)
    buf = io.StringIO()
    check(spec_mod.load(path), out=buf)
    assert "lossy masks, train:" in buf.getvalue() and "dataset ok: 998 images" in buf.getvalue()
    study = run_in(path, tmp_path, capsys, "--set", "dataset.image_size=64", "--set", "dataset.limit=40")
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]


@pytest.mark.parametrize(
    ("what", "make", "message"),
    [
        ("only pictures", "photos", "cannot tell images from masks"),
        ("masks as rich as the pictures", "two-photo-folders", "cannot tell images from masks"),
        ("dozens of indexed classes", "many-classes", "more than init names by number"),
        ("grey levels that are no class codes", "many-levels", "neither class indices nor a few codes"),
    ],
)
def test_init_refuses_what_it_cannot_read_in_one_line_and_writes_no_spec(
    what: str, make: str, message: str, tmp_path: Path
) -> None:
    root, rng = tmp_path / make, np.random.default_rng(0)
    for i in range(8):
        layouts.save(layouts.photo(rng), root / "images" / f"{i}.png")
        if make == "two-photo-folders":
            layouts.save(layouts.photo(rng), root / "masks" / f"{i}.png")
        elif make == "many-classes":  # indices 0..29 in blocks: a 30-class study nobody named
            layouts.save((np.arange(64 * 64).reshape(64, 64) // 140 % 30).astype(np.uint8), root / "masks" / f"{i}.png")
        elif make == "many-levels":  # 16 grey levels, 0, 16, ..., 240: no indices, too many codes
            layouts.save((np.arange(64 * 64).reshape(64, 64) // 256 * 16).astype(np.uint8), root / "masks" / f"{i}.png")
    out = tmp_path / "x.yaml"
    proc = segtune("init", str(root), "-o", str(out), check=False)
    assert proc.returncode == 2, (what, proc.stdout, proc.stderr)
    assert message in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr
    assert not out.exists()


def test_lossy_levels_snap_to_the_nearest_level_and_count_what_is_off(tmp_path: Path) -> None:
    lossy = LossyLevels({0: 0, 255: 1}, 63)
    raw = np.array([[0, 3, 60, 64, 128], [191, 192, 250, 255, 255]], np.uint8)
    assert lossy.snap(raw).tolist() == [[0, 0, 0, IGNORE_INDEX, IGNORE_INDEX], [IGNORE_INDEX, 1, 1, 1, 1]]
    census = ValueCensus()
    census.add(raw)
    off = lossy.off_level(census)
    assert (off.pixels, off.snapped, off.ignored) == (10, 4, 3)
    colours = LossyLevels({(0, 0, 0): 0, (200, 30, 30): 1}, 50)
    rgb = np.array([[[0, 0, 0], [190, 40, 35], [100, 15, 15]]], np.uint8)
    assert colours.snap(rgb).tolist() == [[0, 1, IGNORE_INDEX]]


def test_spec_lossy_masks_need_the_levels_to_snap_to(tmp_path: Path) -> None:
    raw = {"study": "x", "dataset": {"name": "folder", "root": str(tmp_path), "classes": ["a", "b"]}}
    raw["dataset"]["lossy_masks"] = "nearest"
    with pytest.raises(SpecError, match="lossy_masks: needs values"):
        spec_mod.validate(raw)


def test_masks_at_another_size_are_resized_only_when_asked_and_only_at_the_same_aspect(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    layouts.save(layouts.photo(rng, 48, 64), tmp_path / "img.png")
    layouts.save(layouts.label_map(96, 128), tmp_path / "double.png")
    layouts.save(layouts.label_map(96, 96), tmp_path / "square.png")
    policy = ResizePolicy(48, 64)
    double = Record("a", tmp_path / "img.png", tmp_path / "double.png", "train")
    with pytest.raises(DataError, match="same aspect ratio: dataset.mask_resize: nearest resizes it"):
        read_pair(double, policy)
    pair = read_pair(double, policy, MaskReading(resize=True))
    assert pair.resized and (pair.raw == layouts.label_map(48, 64)).all()
    square = Record("b", tmp_path / "img.png", tmp_path / "square.png", "train")
    with pytest.raises(DataError, match="another aspect ratio: no resize can make it fit"):
        read_pair(square, policy, MaskReading(resize=True))


def test_mask_formats_read_as_their_values(tmp_path: Path) -> None:
    labels = layouts.label_map()
    Image.fromarray(labels.astype(np.uint16)).save(tmp_path / "small.tif")
    assert (read_mask(tmp_path / "small.tif") == labels).all()  # 16-bit, values 0/1
    Image.fromarray(labels.astype(np.uint16) * 300).save(tmp_path / "large.tif")
    with pytest.raises(DataError, match="mask values above 255"):
        read_mask(tmp_path / "large.tif")
    gif = Image.fromarray((labels * 255).astype(np.uint8)).convert("P")
    gif.save(tmp_path / "m.gif")
    assert set(np.unique(read_mask(tmp_path / "m.gif")).tolist()) == {0, 255}
    vocish = Image.fromarray(labels.astype(np.uint8), mode="P")
    vocish.putpalette([0, 0, 0, 128, 0, 0] + [0, 0, 0] * 254)  # a coloured palette: its indices are the classes
    vocish.save(tmp_path / "voc.png")
    assert (read_mask(tmp_path / "voc.png") == labels).all()
    noisy = np.stack([labels * 255, labels * 255 + (labels == 0) * 3, labels * 250], axis=2).astype(np.uint8)
    Image.fromarray(noisy).save(tmp_path / "near-grey.png")
    with pytest.raises(DataError, match="colour mask"):
        read_mask(tmp_path / "near-grey.png")  # lossless reading: channels must agree
    assert read_mask(tmp_path / "near-grey.png", MaskReading(lossy=True)).ndim == 2  # lossy: grey with noise


@pytest.mark.parametrize("kind", ["yaml", "json", "csv", "txt"])
def test_split_files_in_the_formats_datasets_ship(kind: str, tmp_path: Path) -> None:
    listed = {"train": ["a_img.jpg", "b"], "val": ["c"], "test": ["d", "zz"]}
    path = tmp_path / f"split.{kind}"
    if kind == "yaml":
        path.write_text(yaml.safe_dump(listed))
    elif kind == "json":
        path.write_text(json.dumps({"splits": listed}))
    elif kind == "csv":
        path.write_text("image_id,subset\n" + "".join(f"{i},{s}\n" for s, ids in listed.items() for i in ids))
    else:
        path.write_text("".join(f"{i} {s}\n" for s, ids in listed.items() for i in ids))
    assert read_split_file(path) == listed
    found = match_ids(listed, ["a", "b", "c", "d"], lambda name: name.split("_img")[0].split(".")[0])
    assert found.splits == {"a": "train", "b": "train", "c": "val", "d": "test"} and found.absent == ["zz"]


def test_an_id_in_two_splits_is_named_unless_the_spec_says_which_wins(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    layouts.split_conflict(tmp_path, rng)
    raw = {
        "study": "x",
        "dataset": {"name": "folder", "root": str(tmp_path), "images": "images/*", "masks": "masks/*"},
    }
    raw["dataset"].update(classes=["bg", "fg"], split={"file": "splits.yaml"})
    with pytest.raises(DataError, match=r"lists 1 id\(s\) in two splits, e.g. 'case0' in train and test"):
        build_dataset(spec_mod.validate(raw).dataset)
    raw["dataset"]["split"]["wins"] = "test"
    data = build_dataset(spec_mod.validate(raw).dataset)
    assert "case0" in [data.names[i] for i in data.splits["test"]] and len(data.splits["train"]) == 6


def test_check_warns_when_most_classes_have_no_train_pixel(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for i in range(6):
        layouts.save(layouts.photo(rng), tmp_path / "images" / f"{i}.png")
        layouts.save(layouts.label_map(), tmp_path / "masks" / f"{i}.png")
    raw = {"study": "x", "dataset": {"name": "folder", "root": str(tmp_path), "classes": [f"c{i}" for i in range(6)]}}
    raw["dataset"].update(allow_missing_classes=True, split={"val": 0.2, "test": 0.0})
    buf = io.StringIO()
    check(spec_mod.validate(raw), out=buf)
    assert "warning: 4 of 6 classes have no pixel in the train split" in buf.getvalue()
