"""`segtune fit DATA_DIR|SPEC --hours H -o OUT`: from a folder as it ships to a checked model, within the hours given.

One command for what people do with six: `init` (every ``CHOICE`` taken as proposed, and said), `check`, the search
(on the cluster, within its share of the time), the finishing step, the exports (ONNX checked in onnxruntime; smp's
``save_pretrained`` folder when the deliverable is one smp model), the report, a model card, and a summary. Each phase
is recorded in ``OUT/fit.json`` as it ends, with the seconds it was planned and spent: the same command again goes on
from the first phase not done, never training again what is trained, and Ctrl-C stops it cleanly in any phase.

**The budget.** ``--hours`` is the whole job's wall-clock time, every invocation together. The search gets all of it
but what the phases after it need, estimated as the search goes from the trials' own epoch seconds
(:func:`finishing_seconds`): a fixed part for exports, report and card, and a number of passes over the val and test
pictures for the ensemble's selection, its scoring and the export's check, each pass at the speed the trials
measured (a picture's pass there costs about an eighth of what it costs in a trial's epoch, as measured). The search
stops starting trials when what is left would not reach a first rung, tells the last ones to end their schedules
where the time runs out, and cuts a trial whose next epoch would end past it (``search.time_budget``).

**The finishing rule.** The search's ensemble (Caruana's selection over the models it trained, `segtune ensemble`) is
the deliverable when it beats the search's best single model on the val pictures it was not selected on, by more
than the bootstrap calls noise; otherwise the best trial is. Both are free: no model is trained after the search.
`finish`'s folds retrain K x F models at full length, which a search given the whole budget leaves no time for; run
`segtune finish` after `fit` when there are hours to spare.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from segtune.errors import SegtuneError, SpecError
from segtune.spec import UNCOUNTED_TRIALS

PHASES = ("spec", "check", "search", "finish", "export", "report", "card")
FINISH_FIXED_S = 45.0  # exports (ONNX and its onnxruntime check, the smp folder), the report and the card
FINISH_PASSES = 24  # passes over val + test at inference speed: 16 candidates, the scoring, the test, the export
# a val picture's pass in the finishing against a picture of a trial's epoch: measured on the Kvasir-SEG searches
# (benchmarks/confirm_search.py, 64 px): 2.3 s for a candidate's pass over 200 val pictures, 20 s epochs of 200 + 200
INFERENCE_SHARE = 1 / 8
STATE = "fit.json"


@dataclass
class Phase:
    planned_s: float | None = None
    spent_s: float = 0.0
    done: bool = False
    note: str = ""


@dataclass
class FitState:
    """``OUT/fit.json``: what each phase planned, spent and left, and where its files are."""

    source: str
    budget_s: float
    spec: str = ""
    study: str = ""
    storage: str = ""
    artifacts: str = ""
    phases: dict[str, Phase] = field(default_factory=lambda: {p: Phase() for p in PHASES})
    deliverable: dict[str, Any] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> FitState:
        raw = json.loads(path.read_text())
        raw["phases"] = {k: Phase(**v) for k, v in raw["phases"].items()}
        return cls(**raw)

    def save(self, path: Path) -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2, default=str))
        tmp.replace(path)

    @property
    def spent_s(self) -> float:
        return sum(p.spent_s for p in self.phases.values())

    def left_s(self) -> float:
        return self.budget_s - self.spent_s


def finishing_seconds(per_epoch: float | None, train: int, val: int, test: int) -> float:
    """What the phases after the search take, from an epoch's measured seconds (train + val of one trial): the fixed
    part, and FINISH_PASSES passes over val + test at inference speed."""
    if per_epoch is None:
        return FINISH_FIXED_S
    per_picture = per_epoch / max(1.0, train + val * INFERENCE_SHARE) * INFERENCE_SHARE
    return FINISH_FIXED_S + FINISH_PASSES * per_picture * (val + test)


@dataclass
class EpochEstimate:
    """One epoch of the space's smallest and largest models (by parameters), timed here before the search."""

    smallest_s: float
    smallest: str
    largest_s: float


def epoch_estimate(spec: Any, train: int, val: int) -> EpochEstimate:
    """A training step on one batch at the canvas size (the fastest of three), times the batches of an epoch, val at
    inference speed: for the space's smallest model (no search can do with less: an impossible budget is refused by
    it) and its largest (what the search grants its first trials by, until their own epochs are measured)."""
    import torch

    from segtune import space
    from segtune.config import TrialConfig
    from segtune.data.resize import ResizePolicy
    from segtune.spec import num_classes
    from segtune.training.models import build_model, pairing_problem

    params = space.parse_space(spec.space)
    configs = [TrialConfig.from_dict(c.to_dict()) for c, _ in space.sample_configs(params, 12, seed=0)]
    pairs = {(c.arch, c.encoder): c for c in configs if pairing_problem(c.arch, c.encoder) is None}
    if not pairs:
        raise SpecError("space: no architecture / encoder pairing in the space can be built")
    h, w = ResizePolicy.from_spec(spec.dataset.image_size, spec.dataset.resize).canvas
    classes = num_classes(spec.dataset)

    def epoch(config: TrialConfig) -> tuple[float, int]:
        model = build_model(config.replace(encoder_weights=None), classes, None)
        batch = max(1, int(config.batch_size))
        x, y = torch.rand(batch, 3, h, w), torch.zeros(batch, h, w, dtype=torch.long)
        optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
        loss = torch.nn.CrossEntropyLoss()
        model.train()
        timings = []
        for _ in range(3):  # the first step pays for allocations
            started = time.perf_counter()
            optimizer.zero_grad()
            loss(model(x), y).backward()
            optimizer.step()
            timings.append(time.perf_counter() - started)
        size = sum(p.numel() for p in model.parameters())
        return min(timings) * (train / batch + val / batch * INFERENCE_SHARE), size

    timed = {k: epoch(c) for k, c in pairs.items()}
    (arch, encoder), (small_s, _) = min(timed.items(), key=lambda kv: kv[1][1])
    large_s = max(timed.values(), key=lambda v: v[1])[0]
    what = f"{arch} / {encoder}, batch {pairs[(arch, encoder)].batch_size} at {h} x {w}"
    return EpochEstimate(small_s, what, large_s)


class Fit:
    """One `segtune fit`: its folder, its state and its clock (started when the command starts)."""

    def __init__(
        self,
        source: Path,
        hours: float,
        out_dir: Path,
        storage: str | None = None,
        address: str | None = None,
        artifacts: str | None = None,
        stream: Any = None,
    ):
        if not hours > 0 or hours != hours:  # nan
            raise SpecError(f"--hours: must be a number of hours above 0, got {hours}")
        self.started = time.monotonic()
        self.source, self.out_dir, self.address = source, out_dir.resolve(), address
        self.stream = stream or sys.stdout
        out_dir.mkdir(parents=True, exist_ok=True)
        self.state_path = self.out_dir / STATE
        if self.state_path.is_file():
            self.state = FitState.load(self.state_path)
            if Path(self.state.source).resolve() != source.resolve():
                raise SegtuneError(
                    f"{self.out_dir}: holds a fit of {self.state.source}, not of {source}; give another -o folder"
                )
            self.state.budget_s = hours * 3600  # the hours given now: what is left is counted against them
            self.say(f"going on with the fit in {self.out_dir}: {self.state.spent_s / 60:.1f} min spent before")
        else:
            self.state = FitState(str(source.resolve()), hours * 3600)
        self.state.storage = storage or self.state.storage or f"sqlite:///{self.out_dir / 'segtune.db'}"
        self.state.artifacts = artifacts or self.state.artifacts or str(self.out_dir / "artifacts")
        self._phase_started = time.monotonic()

    def say(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

    # -- bookkeeping -------------------------------------------------------------------------------------------------

    def begin(self, name: str, planned_s: float | None = None) -> bool:
        """Start phase ``name``; False when an earlier invocation finished it (it is said, and skipped)."""
        phase = self.state.phases[name]
        if phase.done:
            self.say(f"[{name}] done before ({phase.note or 'recorded in fit.json'})")
            return False
        if planned_s is not None:
            phase.planned_s = round(planned_s, 1)
        self._phase_started = time.monotonic()
        left = self.state.left_s()
        self.say(f"[{name}] {f'planned {planned_s / 60:.1f} min; ' if planned_s else ''}{left / 60:.1f} min left")
        return True

    def spend(self, name: str, done: bool, note: str = "") -> None:
        """Phase ``name``'s seconds since it began, added to what it spent; recorded at once (a Ctrl-C keeps them)."""
        phase = self.state.phases[name]
        phase.spent_s = round(phase.spent_s + time.monotonic() - self._phase_started, 1)
        phase.done = done
        phase.note = note or phase.note
        self._phase_started = time.monotonic()
        self.state.save(self.state_path)

    # -- the phases ---------------------------------------------------------------------------------------------------

    def run(self) -> int:
        """Every phase not done yet, in order; 0, or 130 when interrupted (the state says where to go on)."""
        from segtune.search.interrupt import SearchInterrupted

        phase = "spec"
        try:
            for phase in PHASES:
                getattr(self, f"_{phase}")()
        except (KeyboardInterrupt, SearchInterrupted) as e:
            self.spend(phase, done=False)
            signal = getattr(e, "signal_name", "Ctrl-C")
            self.say(
                f"segtune fit: interrupted by {signal} during {phase}; what is done is kept in {self.state_path}. "
                "Run the same command to go on."
            )
            return 130
        self.say(self.summary())
        return 0

    def _spec(self) -> None:
        if not self.begin("spec"):
            return
        target = self.out_dir / "spec.yaml"
        if self.source.is_dir():
            from segtune.init import init

            init(self.source, target, stream=self.stream)
            choices = [line.strip() for line in target.read_text().splitlines() if "CHOICE" in line]
            if choices:
                self.say(f"fit takes each of init's {len(choices)} CHOICE as proposed:")
                for line in choices:
                    self.say(f"  {line.lstrip('# ')[:300]}")
            else:
                self.say("init left no CHOICE: every decision above follows from the files")
        else:
            from segtune.spec import load

            load(self.source)  # a spec that does not validate: exit 2 now, naming its field
            target.write_text(self.source.read_text())
        self.state.spec = str(target)
        self.spend("spec", done=True, note=f"spec {target.name}")

    def _load_spec(self) -> Any:
        from segtune.spec import load

        overrides = [
            f"search.trials={UNCOUNTED_TRIALS}",
            f"results_dir={self.out_dir / 'runs'}",
            f"artifacts={self.state.artifacts}",
        ]
        spec = load(self.state.spec, overrides)
        self.state.study = spec.study
        return spec

    def _check(self) -> None:
        if not self.begin("check"):
            return
        from segtune.check import check

        spec = self._load_spec()
        report = check(spec, out=self.stream)
        splits = report["dataset"]["splits"]
        self.state.deliverable["splits"] = splits
        self.refuse_impossible(spec, splits)
        self.spend("check", done=True, note="spec, models and data checked")

    def refuse_impossible(self, spec: Any, splits: dict[str, int]) -> None:
        """A budget that cannot hold one epoch of the space's smallest model and the finishing is exit 2, now."""
        estimate = epoch_estimate(spec, splits.get("train", 0), splits.get("val", 0))
        self.state.deliverable["epoch_estimate_s"] = round(estimate.largest_s, 2)
        epoch, what = estimate.smallest_s, estimate.smallest
        need = epoch + finishing_seconds(epoch, splits.get("train", 0), splits.get("val", 0), splits.get("test", 0))
        left = self.state.left_s()
        if left < need:
            raise SegtuneError(
                f"--hours: {self.state.budget_s / 3600:g} h leaves {left:.0f} s, less than one epoch of the smallest "
                f"model ({what}: about {epoch:.0f} s here) and the finishing after it ({need - epoch:.0f} s); give "
                f"at least {(self.state.spent_s + need) / 3600:.3f} h"
            )

    def _search(self) -> None:
        spec = self._load_spec()
        splits = self.state.deliverable.get("splits", {})
        train, val, test = (int(splits.get(s, 0)) for s in ("train", "val", "test"))
        planned = self.state.left_s() - finishing_seconds(None, train, val, test)
        if not self.begin("search", planned):
            return
        from segtune.search import store
        from segtune.search.run import run_study
        from segtune.search.store.budget import Clock

        # the clock keeps finishing_seconds back as the trials measure their epochs (the largest model's estimate
        # until then), and its time runs from now: Ray's start and the data's decoding are the search's too
        spec.search.time_budget = self.state.left_s()
        clock = Clock(
            spec.search.time_budget,
            reserve=lambda per_epoch: finishing_seconds(per_epoch, train, val, test),
            first_epoch_s=self.state.deliverable.get("epoch_estimate_s"),
        )
        existing = store.existing_study(self.state.storage, spec.study)
        study = run_study(
            spec,
            self.state.storage,
            spec.study,
            address=self.address,
            out=self.stream,
            resume=existing is not None,
            artifacts_url=self.state.artifacts,
            clock=clock,
        )
        complete = sum(t.state.name == "COMPLETE" for t in study.trials)
        self.spend("search", done=True, note=f"{len(study.trials)} trials, {complete} complete")

    def _finish(self) -> None:
        if not self.begin("finish"):
            return
        from segtune.results import ensemble
        from segtune.search import store

        study = store.load_study(store.open_storage(self.state.storage, must_exist=True), self.state.study)
        selection = ensemble.select_study(study, self.state.artifacts, out=self.stream)
        ensemble.record(study, selection)
        self.say(ensemble.table(selection))
        for line in ensemble.report_lines(selection):
            self.say(line)
        from segtune.results import fetch

        if selection.kept:
            members = [(m.trial, m.weight) for m in selection.members]
            weights = selection.weighted_paths()
        else:
            best = next(m for m in selection.candidates if m.label == selection.best_single)
            members = [(best.trial, 1)]
            weights = [(fetch.trial_model(study, int(best.trial), self.state.artifacts), 1.0)]
        chosen = {
            "kind": "ensemble" if selection.kept else "trial",
            "members": [{"trial": t, "weight": w} for t, w in members],
            "why": selection.reason
            if selection.kept
            else f"the ensemble is not kept ({selection.reason}): the best trial",
            "val": selection.val_ensemble if selection.kept else selection.val_best_single,
            "latency_ms": selection.latency_ms if selection.kept else None,
        }
        if self.state.deliverable.get("splits", {}).get("test"):
            spec = study.user_attrs["spec"]
            score = ensemble.evaluate(weights, spec["dataset"], "test")
            chosen["test"] = {"miou": score.miou, "dice": score.dice, "pictures": score.images}
        self.state.deliverable.update(chosen)
        self.spend("finish", done=True, note=f"{chosen['kind']}: {chosen['why']}")

    def _export(self) -> None:
        if not self.begin("export"):
            return
        from segtune.results import fetch
        from segtune.results.deploy import export, export_ensemble, export_smp
        from segtune.search import store
        from segtune.training.models import ARCHITECTURES

        study = store.load_study(store.open_storage(self.state.storage, must_exist=True), self.state.study)
        onnx = self.out_dir / "model.onnx"
        if self.state.deliverable["kind"] == "ensemble":
            report = export_ensemble(study, onnx, [], artifacts_url=self.state.artifacts, stream=self.stream)
        else:
            number = self.state.deliverable["members"][0]["trial"]
            model = fetch.trial_model(study, number, self.state.artifacts)
            dataset = (study.user_attrs.get("spec") or {}).get("dataset")
            report = export(model, onnx, [], stream=self.stream, dataset=dataset)
            arch = study.trials[number].user_attrs.get("config", {}).get("arch")
            if arch in ARCHITECTURES:
                self.state.files["smp"] = str(export_smp(model, self.out_dir / "smp-model", stream=self.stream))
        self.state.files["onnx"] = str(onnx)
        self.state.deliverable["onnx_ms_batch1"] = report.latency_ms["onnx_b1"]
        self.state.deliverable["onnx_agreement"] = report.agreement
        self.spend("export", done=True, note=f"ONNX checked in onnxruntime: {onnx.name}")

    def _report(self) -> None:
        if not self.begin("report"):
            return
        from segtune.results.report import build
        from segtune.search import store

        study = store.load_study(store.open_storage(self.state.storage, must_exist=True), self.state.study)
        path, _ = build(study, self.out_dir / "report.html", artifacts_url=self.state.artifacts)
        self.state.files["report"] = str(path)
        self.spend("report", done=True, note=path.name)

    def _card(self) -> None:
        if not self.begin("card"):
            return
        card = self.out_dir / "MODEL_CARD.md"
        card.write_text(self.card_text())
        self.state.files["card"] = str(card)
        self.spend("card", done=True, note=card.name)

    # -- what the user reads ------------------------------------------------------------------------------------------

    def card_text(self) -> str:
        d, s = self.state.deliverable, self.state
        test = d.get("test") or {}
        members = ", ".join(f"trial {m['trial']} x {m['weight']}" for m in d.get("members", []))
        lines = [
            f"# {s.study}: a segmentation model made by `segtune fit`",
            "",
            f"- data: {s.source} (splits: {d.get('splits')})",
            f"- model: {d.get('kind')} of {members} (study {s.study!r} in {s.storage})",
            f"- why: {d.get('why')}",
            f"- val mIoU {d.get('val', float('nan')):.4f}"
            + (f"; test mIoU {test['miou']:.4f} on {test['pictures']} pictures at their own size" if test else ""),
            f"- files: {', '.join(f'{k}: {Path(v).name}' for k, v in s.files.items())}",
            f"- budget: {s.budget_s / 3600:g} h, spent {s.spent_s / 3600:.2f} h",
            "",
            "The ONNX graph takes raw pixels (uint8, N x 3 x H x W on the canvas its metadata names), normalises them "
            "itself and outputs logits (one model) or mean probabilities (an ensemble); `segtune predict model.onnx "
            "IMAGE...` writes masks at each picture's own size.",
        ]
        return "\n".join(lines) + "\n"

    def summary(self) -> str:
        from segtune.tables import format_table

        d, s = self.state.deliverable, self.state
        rows = [
            [name, "-" if p.planned_s is None else f"{p.planned_s / 60:.1f}", f"{p.spent_s / 60:.1f}", p.note]
            for name, p in s.phases.items()
        ]
        test = d.get("test")
        lines = [
            "",
            f"segtune fit of {s.source}: {d.get('kind')} ({d.get('why')})",
            f"val mIoU {d.get('val', float('nan')):.4f}"
            + (f", test mIoU {test['miou']:.4f} ({test['pictures']} pictures, their own size)" if test else "")
            + (f", {d['onnx_ms_batch1']:.1f} ms a picture (onnxruntime, batch 1)" if d.get("onnx_ms_batch1") else ""),
            f"budget {s.budget_s / 60:.1f} min, spent {s.spent_s / 60:.1f} min",
            format_table(["phase", "planned min", "spent min", "what"], rows),
            "files: " + ", ".join(f"{k} {v}" for k, v in s.files.items()),
        ]
        return "\n".join(lines)
