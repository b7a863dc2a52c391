"""The study spec: the YAML a user writes, loaded, overridden and validated once.

Every error is a :class:`SpecError` whose message starts with the YAML path of the bad field
(``dataset.image_size: ...``), so the CLI can print it as one line.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from segtune.config import TrialConfig
from segtune.errors import SpecError

if TYPE_CHECKING:
    from segtune.data.resize import ResizePolicy

BUILTIN_PREFIX = "builtin:"
DEFAULT_STORAGE = "sqlite:///segtune.db"
SAMPLES_DIR = Path(__file__).parent / "samples"


UNCOUNTED_TRIALS = 100_000  # search.trials when the wall-clock budget alone bounds a search (segtune fit)


class _Loader(yaml.SafeLoader):
    """SafeLoader that reads ``1e-3`` as a float (YAML 1.2), not as the string PyYAML makes of it."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+][0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def parse_yaml(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _check_image_size(v: int | list[int]) -> int | list[int]:
    sides = [v] if isinstance(v, int) else v
    if len(sides) not in (1, 2) or any(s < 32 for s in sides):
        raise ValueError(f"must be one side (the long side) or [height, width], each at least 32 (got {v})")
    return v


class SplitSpec(_Strict):
    val: float = Field(0.2, ge=0, lt=1)
    test: float = Field(0.2, ge=0, lt=1)
    seed: int = 42

    @model_validator(mode="after")
    def _leaves_training_data(self) -> SplitSpec:
        if self.val + self.test >= 1:
            raise ValueError("val + test must leave something to train on (sum < 1)")
        return self


class ListSplitSpec(_Strict):
    """Fixed splits from one list file per split (ids one a line, or a CSV column, a JSON or YAML list), relative
    to root; ids are matched as split files' are. Without a val list, val is carved from train (0.2, seed 42)."""

    train: str
    val: str | None = None
    test: str | None = None
    wins: Literal["train", "val", "test"] | None = Field(
        None, description="the split an id listed in two lists goes to; unset, such an id is an error"
    )


class SplitFileSpec(_Strict):
    """Fixed splits from one file that lists ids per split, as datasets ship it: YAML or JSON (split name -> ids),
    CSV (an id column and a split column) or text (``id split`` per line); relative to root. Without a val list,
    val is carved from train (``val_fraction``, ``seed``)."""

    file: str
    wins: Literal["train", "val", "test"] | None = Field(
        None, description="the split an id listed in two splits goes to; unset, such an id is an error"
    )
    val_fraction: float = Field(0.2, gt=0, lt=1)
    seed: int = 42


SPLIT_PLACEHOLDER = "{split}"  # in folder globs: images/{split}/*.jpg reads train/, val/, test/ subfolders


class _DatasetBase(_Strict):
    image_size: int | list[int] = 224  # the long side, or [height, width]: pictures fit inside, aspect kept
    resize: Literal["pad", "squash"] = "pad"  # pad: keep the aspect ratio, pad with ignore; squash: stretch
    limit: int | None = Field(None, ge=1, description="use at most this many images per split (quick runs)")
    skip_bad_files: bool = Field(False, description="leave out unreadable or inconsistent files instead of stopping")
    allow_missing_classes: bool = Field(
        False, description="a class with no pixel in the train split is an error unless this is on (quick limit: runs)"
    )
    mask_resize: Literal["nearest"] | None = Field(
        None, description="nearest: a mask stored at another size than its picture (same aspect within 1%) is resized"
    )

    @field_validator("image_size")
    @classmethod
    def _size(cls, v: int | list[int]) -> int | list[int]:
        return _check_image_size(v)

    def policy(self) -> ResizePolicy:
        """How every picture of this dataset becomes the model's input (training, retrain, predict, ONNX)."""
        from segtune.data.resize import ResizePolicy  # the data package imports this module

        return ResizePolicy.from_spec(self.image_size, self.resize)


class OxfordPetsSpec(_DatasetBase):
    name: Literal["oxford_pets"]
    root: str = "data"
    download: bool = True
    target: Literal["trimap", "binary"] = "trimap"
    val_fraction: float = Field(0.2, gt=0, lt=1)
    seed: int = 42


class FolderSpec(_DatasetBase):
    name: Literal["folder"]
    root: str
    images: str = "images/*"
    masks: str = "masks/*"
    key: str | None = None
    classes: list[str] = Field(min_length=2)
    values: dict[int, int] | None = None  # raw mask value -> class index; unset: decided from all masks
    colors: dict[str, int] | None = None  # colour-coded masks: "r,g,b" -> class index (or ignore_index)
    ignore_index: int | None = None  # a raw value (or a class index in `values`) that marks pixels to ignore
    lossy_masks: Literal["nearest"] | None = None  # JPEG masks: each pixel snapped to the nearest value / colour
    split: SplitSpec | ListSplitSpec | SplitFileSpec | Literal["folders"] = SplitSpec()  # folders: {split} in globs
    image_size: int | list[int] = 256

    @field_validator("key")
    @classmethod
    def _key_is_regex(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                re.compile(v)
            except re.error as e:
                raise ValueError(f"not a regular expression: {e}") from None
        return v

    @model_validator(mode="after")
    def _values_are_classes(self) -> FolderSpec:
        if self.values and self.colors:
            raise ValueError("give values (single-channel masks) or colors (colour-coded masks), not both")
        if self.lossy_masks and not (self.values or self.colors):
            raise ValueError("lossy_masks: needs values (grey levels) or colors: the levels each pixel is snapped to")
        for colour, cls_index in (self.colors or {}).items():
            parts = colour.split(",")
            if len(parts) != 3 or not all(x.strip().isdigit() and int(x) <= 255 for x in parts):
                raise ValueError(f"colors: {colour!r} is not r,g,b with each in 0..255")
            if not (0 <= cls_index < len(self.classes)) and cls_index != self.ignore_index:
                raise ValueError(f"colors: {colour} maps to {cls_index}, neither a class index nor ignore_index")
        has = [SPLIT_PLACEHOLDER in g for g in (self.images, self.masks)]
        if self.split == "folders" and not all(has):
            raise ValueError(f"split: folders needs {SPLIT_PLACEHOLDER} in both globs, e.g. images/{{split}}/*.jpg")
        if self.split != "folders" and any(has):
            raise ValueError(f"images/masks: {SPLIT_PLACEHOLDER} in a glob needs split: folders")
        for pixel, cls_index in (self.values or {}).items():
            if not (0 <= pixel <= 255):
                raise ValueError(f"values: mask pixel value {pixel} is outside 0..255")
            if not (0 <= cls_index < len(self.classes)) and cls_index != self.ignore_index:
                raise ValueError(
                    f"values: {pixel} maps to {cls_index}, which is neither a class index "
                    f"(0..{len(self.classes) - 1}) nor ignore_index"
                )
        return self


class VocSpec(_DatasetBase):
    """Pascal VOC segmentation in torchvision's layout: ROOT/VOCdevkit/VOC2012/{JPEGImages,SegmentationClass,...}."""

    name: Literal["voc"]
    root: str = "data"
    year: Literal["2012", "2011", "2010", "2009", "2008", "2007"] = "2012"
    val_fraction: float = Field(0.1, gt=0, lt=1, description="carved from the train list; the val list is the test")
    seed: int = 42
    image_size: int | list[int] = 320


class CamVidSpec(_DatasetBase):
    """CamVid in either common layout: SegNet's 11 classes or the 32-class RGB-coded one (class_dict.csv)."""

    name: Literal["camvid"]
    root: str = "data/CamVid"
    keep: list[str] | None = Field(None, min_length=1, description="classes to learn; the others become background")
    background: str = "background"
    image_size: int | list[int] = 256

    @field_validator("keep")
    @classmethod
    def _distinct(cls, v: list[str] | None) -> list[str] | None:
        if v is not None and len({k.lower() for k in v}) != len(v):
            raise ValueError("lists a class twice")
        return v


class SyntheticSpec(_DatasetBase):
    name: Literal["synthetic"]
    num_images: int = Field(64, ge=4)
    num_classes: int = Field(3, ge=2, le=20)
    image_size: int | list[int] = 64
    split: SplitSpec = SplitSpec()
    seed: int = 0


DatasetSpec = Annotated[OxfordPetsSpec | FolderSpec | VocSpec | CamVidSpec | SyntheticSpec, Field(discriminator="name")]
DATASET_NAMES = ("oxford_pets", "folder", "voc", "camvid", "synthetic")
DATASET_MODELS: dict[str, type[BaseModel]] = {
    "oxford_pets": OxfordPetsSpec,
    "folder": FolderSpec,
    "voc": VocSpec,
    "camvid": CamVidSpec,
    "synthetic": SyntheticSpec,
}


def dataset_defaults(raw: dict[str, Any]) -> dict[str, Any]:
    """The defaults of a dataset section's fields, as JSON: what a stored spec of an older version left out."""
    model = DATASET_MODELS.get(raw.get("name", ""))
    if model is None:
        return {}
    defaults = {
        k: f.get_default(call_default_factory=True) for k, f in model.model_fields.items() if not f.is_required()
    }
    return {k: v.model_dump(mode="json") if isinstance(v, BaseModel) else v for k, v in defaults.items()}


VOC_CLASSES = [
    "background",
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
]
CAMVID_11 = [
    "Sky",
    "Building",
    "Pole",
    "Road",
    "Pavement",
    "Tree",
    "SignSymbol",
    "Fence",
    "Car",
    "Pedestrian",
    "Bicyclist",
]


class SearchSpec(_Strict):
    sampler: Literal["tpe", "random"] = "tpe"
    scheduler: Literal["asha", "none"] = "asha"
    trials: int = Field(20, ge=1)
    max_epochs: int = Field(10, ge=1)
    grace_period: int | Literal["auto"] = Field(
        "auto", description="first rung (epochs); auto: search/scheduling/defaults.py"
    )
    reduction_factor: float | Literal["auto"] = Field(
        "auto", description="ASHA's eta; auto: search/scheduling/defaults.py"
    )
    metric: Literal["val_miou", "val_dice", "val_pixel_acc"] = "val_miou"
    seed: int | None = 0
    max_concurrent: int | None = Field(None, ge=1)
    n_startup_trials: int | Literal["auto"] = Field("auto", description="TPE's start-up trials")
    startup: Literal["random", "stratified"] = Field(
        "stratified", description="the start-up: a design covering every choice evenly, or i.i.d. draws"
    )
    min_first_rung: int | Literal["auto"] = Field("auto", description="results rung 1 needs to pass a trial")
    brackets: int | Literal["auto"] = Field("auto", description="ASHA brackets (Hyperband-style); auto: 1")
    first_rung: Literal["auto", "plateau", "grace"] = Field(
        "auto", description="grace (auto): judged at grace_period; plateau: once off the majority-class plateau"
    )
    promotion: bool | Literal["auto"] = Field(
        "auto", description="true: a trial a rung stops is paused, resumed when later results promote it (auto: on)"
    )
    keep_free_gb: float = Field(
        5.0,
        ge=0,
        allow_inf_nan=False,
        description="GB the driver's disk keeps free: below it paused trials end (least promising first), freeing "
        "their states",
    )
    budget_epochs: int | None = Field(None, ge=1, description="trial-epochs in all; then no trial starts")
    time_budget: float | None = Field(
        None,
        gt=0,
        allow_inf_nan=False,
        description="wall-clock seconds for the search (or '90m', '4h'): no trial starts that cannot reach its first "
        "rung in the time left, and each is told to end its schedule where the time runs out",
    )
    budget_rule: Literal["finish", "exact"] = Field(
        "finish",
        description="finish: running trials finish past the budget; exact: never past it (search/store/budget.py)",
    )
    starting_points: list[dict[str, Any] | Literal["auto"]] | Literal["auto"] = Field(
        default_factory=list,
        description="configurations run first; auto: the winners of earlier studies on alike data "
        "(search/scheduling/transfer.py)",
    )
    prior: Literal["auto", "race", "first"] = Field(
        "auto",
        description="race: the starting points race (successive halving among them, judged together at "
        "prior_judged_at of max_epochs), promotion may bring one back; first: they run to the end before anything "
        "is judged; auto: race when the spec lists two or more, first for one",
    )
    prior_judged_at: float | Literal["auto"] = Field(
        "auto",
        description="with a raced list: the share of max_epochs its members train before they are judged together "
        "(0.5: half way); auto: search/scheduling/defaults.py",
    )
    near_incumbent: float | Literal["auto"] = Field(
        "auto",
        description="share of the model's trials drawn near the incumbent (one or two of its parameters changed); "
        "auto: search/scheduling/defaults.py",
    )
    objectives: list[str] | None = Field(None, description="e.g. [val_miou, latency_ms]: accuracy against costs")
    constraints: dict[str, float] = Field(default_factory=dict, description="e.g. {latency_ms: 20}: cost limits")

    @model_validator(mode="after")
    def _objectives_known(self) -> SearchSpec:
        from segtune.objectives import COSTS, NAMES, accuracy_of

        if self.objectives is not None:
            unknown = [o for o in self.objectives if o not in NAMES]
            if unknown:
                raise ValueError(f"objectives: unknown {unknown[0]!r} (known: {', '.join(NAMES)})")
            if len(set(self.objectives)) != len(self.objectives):
                raise ValueError("objectives: names one objective twice")
            accuracy = [o for o in self.objectives if o not in COSTS]
            if len(accuracy) != 1:
                raise ValueError("objectives: exactly one accuracy metric (val_miou, val_dice or val_pixel_acc)")
            if "metric" in self.model_fields_set and self.metric != accuracy_of(self.objectives):
                raise ValueError(f"metric: {self.metric} but the objectives' accuracy metric is {accuracy[0]}")
            self.metric = accuracy[0]
        for name, limit in self.constraints.items():
            if name not in COSTS:
                raise ValueError(f"constraints: {name!r} is not a cost (known: {', '.join(COSTS)})")
            if limit <= 0:
                raise ValueError(f"constraints: {name} must be a limit > 0, got {limit}")
        return self

    @property
    def own_starting_points(self) -> list[dict[str, Any]]:
        """The configurations the spec writes out (``auto`` asks for earlier studies' winners besides them)."""
        points = [] if self.starting_points == "auto" else self.starting_points
        return [p for p in points if isinstance(p, dict)]

    @property
    def transfer(self) -> bool:
        """``starting_points: auto`` (or ``auto`` among them): start from earlier studies' winners too."""
        return self.starting_points == "auto" or "auto" in self.starting_points

    @property
    def objective_names(self) -> list[str]:
        """What the study optimises, accuracy first: [metric] for a single-objective study."""
        return list(self.objectives) if self.objectives else [self.metric]

    @property
    def cost_names(self) -> list[str]:
        """The costs each trial measures: those among the objectives, and those the constraints limit."""
        from segtune.objectives import COSTS

        named = [*self.objective_names, *self.constraints]
        return [c for c in COSTS if c in named]

    @field_validator("n_startup_trials")
    @classmethod
    def _startup_positive(cls, v: int | str) -> int | str:
        if isinstance(v, int) and v < 0:
            raise ValueError("must be 'auto' or a whole number >= 0")
        return v

    @field_validator("time_budget", mode="before")
    @classmethod
    def _duration(cls, v: Any) -> Any:
        """``4h``, ``90m``, ``30s`` or a number of seconds."""
        if isinstance(v, str):
            text = v.strip().lower()
            units = {"h": 3600.0, "m": 60.0, "s": 1.0}
            try:
                return float(text[:-1]) * units[text[-1]] if text and text[-1] in units else float(text)
            except ValueError:
                raise ValueError(f"{v!r} is no duration: write seconds, or a number with h, m or s") from None
        return v

    @field_validator("near_incumbent")
    @classmethod
    def _a_share(cls, v: float | str) -> float | str:
        if not isinstance(v, str) and not 0 <= v <= 1:
            raise ValueError("must be 'auto' or a share between 0 and 1")
        return v

    @field_validator("prior_judged_at")
    @classmethod
    def _a_share_of_the_epochs(cls, v: float | str) -> float | str:
        if not isinstance(v, str) and not 0 < v <= 1:
            raise ValueError("must be 'auto' or a share of max_epochs above 0 and at most 1")
        return v

    @field_validator("grace_period", "min_first_rung", "brackets")
    @classmethod
    def _at_least_one(cls, v: int | str) -> int | str:
        if isinstance(v, int) and v < 1:
            raise ValueError("must be 'auto' or a whole number >= 1")
        return v

    @field_validator("reduction_factor")
    @classmethod
    def _above_one(cls, v: float | str) -> float | str:
        if not isinstance(v, str) and v <= 1:
            raise ValueError("must be 'auto' or a number > 1")
        return v

    @model_validator(mode="after")
    def _grace_within_epochs(self) -> SearchSpec:
        if isinstance(self.grace_period, int) and self.grace_period > self.max_epochs:
            raise ValueError(f"grace_period ({self.grace_period}) must be <= max_epochs ({self.max_epochs})")
        return self


class ResourcesSpec(_Strict):
    cpus_per_trial: float | Literal["auto"] = "auto"  # auto: a GPU node's CPUs over the trials it holds; CPU-only: 1
    gpus_per_trial: float | Literal["auto"] = "auto"
    reuse_workers: bool = Field(True, description="a worker process runs trial after trial; false: a fresh one each")

    @field_validator("cpus_per_trial")
    @classmethod
    def _positive(cls, v: float | str) -> float | str:
        if isinstance(v, float | int) and v <= 0:
            raise ValueError("must be 'auto' or a number of CPUs > 0")
        return v

    @field_validator("gpus_per_trial")
    @classmethod
    def _fraction_or_whole(cls, v: float | str) -> float | str:
        if isinstance(v, float | int) and (v < 0 or (v > 1 and v != int(v))):
            raise ValueError("must be 'auto', a fraction in [0, 1] or a whole number of GPUs")
        return v


class TrainSpec(_Strict):
    precision: Literal["auto", "bf16", "fp16", "fp32"] = "auto"  # auto: bf16 where the GPU has it, else fp16
    channels_last: bool = False
    loader_workers: int | Literal["auto"] = "auto"
    cap_gpu_memory: bool = Field(True, description="cap each trial's GPU memory at its share of the GPU")
    checkpoint_every: int = Field(
        1, ge=0, description="epochs between a trial's resumable states (a lost node costs at most this); 0: none"
    )


class StudySpec(_Strict):
    study: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
    dataset: DatasetSpec
    space: dict[str, Any] = Field(default_factory=dict)
    search: SearchSpec = SearchSpec()
    resources: ResourcesSpec = ResourcesSpec()
    train: TrainSpec = TrainSpec()
    storage: str = DEFAULT_STORAGE
    artifacts: str | None = None  # every trial's model: a folder or s3://bucket/prefix (default: beside the SQLite)
    results_dir: str = "runs"


def resolve_root(root: str) -> Path:
    """``builtin:NAME`` is a sample shipped inside the package; anything else is relative to the cwd."""
    if root.startswith(BUILTIN_PREFIX):
        return SAMPLES_DIR / root[len(BUILTIN_PREFIX) :]
    return Path(root).expanduser().resolve()


def apply_override(raw: dict, assignment: str) -> None:
    """Apply one ``--set dotted.key=value``; the value is read as YAML (numbers, lists, null)."""
    key, sep, value = assignment.partition("=")
    if not sep or not key.strip():
        raise SpecError(f"--set {assignment}: expected dotted.key=value")
    parts = key.strip().split(".")
    node = raw
    for i, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise SpecError(f"{'.'.join(parts[: i + 1])}: is a value, cannot set {key} inside it")
        node = child
    node[parts[-1]] = parse_yaml(value)


def _format_error(err: ValidationError) -> str:
    first = err.errors()[0]
    # drop the discriminator tag pydantic inserts (dataset.oxford_pets.root -> dataset.root)
    loc = [str(p) for p in first["loc"] if str(p) not in DATASET_NAMES]
    msg = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        msg = "unknown field"
    return f"{'.'.join(loc) or '(top level)'}: {msg}"


def validate(raw: Any, source: str = "spec", check_root: bool = True) -> StudySpec:
    """Validate a parsed spec: structure, then the search space, then the dataset root."""
    if not isinstance(raw, dict):
        raise SpecError(f"{source}: (top level): expected a mapping with study, dataset, space, search")
    dataset = raw.get("dataset")
    if isinstance(dataset, dict) and dataset.get("name") not in DATASET_NAMES:
        raise SpecError(
            f"{source}: dataset.name: unknown dataset {dataset.get('name')!r} (known: {', '.join(DATASET_NAMES)})"
        )
    try:
        spec = StudySpec.model_validate(raw)
    except ValidationError as e:
        raise SpecError(f"{source}: {_format_error(e)}") from None

    from segtune import space  # the space knows the trial parameters and their registries

    try:
        params = space.parse_space(spec.space)
        space.validate_space(params, num_classes=num_classes(spec.dataset))
        for i, point in enumerate(spec.search.own_starting_points):
            space.starting_point_params(params, point, num_classes(spec.dataset), f"search.starting_points[{i}]")
    except SpecError as e:
        raise SpecError(f"{source}: {e}") from None

    ds = spec.dataset
    if check_root and not isinstance(ds, SyntheticSpec):
        root = resolve_root(ds.root)
        downloads = isinstance(ds, OxfordPetsSpec) and ds.download and not ds.root.startswith(BUILTIN_PREFIX)
        must_exist = not downloads
        if must_exist and not root.is_dir():
            raise SpecError(f"{source}: dataset.root: folder {root} does not exist")
    return spec


def num_classes(ds: OxfordPetsSpec | FolderSpec | VocSpec | CamVidSpec | SyntheticSpec) -> int:
    """Known from the spec alone (CamVid's 32-class layout without ``keep`` is the one exception: 32)."""
    if isinstance(ds, OxfordPetsSpec):
        return 3 if ds.target == "trimap" else 2
    if isinstance(ds, FolderSpec):
        return len(ds.classes)
    if isinstance(ds, VocSpec):
        return len(VOC_CLASSES)
    if isinstance(ds, CamVidSpec):
        return len(ds.keep) + 1 if ds.keep else camvid_class_count(resolve_root(ds.root))
    return ds.num_classes


def camvid_class_count(root: Path) -> int:
    """11 for SegNet's layout; the rows of class_dict.csv (less Void) for the 32-class one."""
    csv = root / "class_dict.csv"
    if csv.is_file():
        rows = [line for line in csv.read_text().splitlines()[1:] if line.strip()]
        return sum(1 for line in rows if line.split(",")[0].strip().lower() != "void")
    return len(CAMVID_11)


def read_yaml(path: Path) -> Any:
    """Parse a YAML file; unreadable files and bad YAML are a SpecError naming the file (and the line)."""
    try:
        text = path.read_text()
    except OSError as e:
        raise SpecError(f"{path}: cannot read the spec: {e.strerror or e}") from None
    try:
        raw = parse_yaml(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise SpecError(f"{path}: not valid YAML{where}: {problem}") from None
    return raw


def load(
    path: str | Path, overrides: list[str] | None = None, data_root: str | None = None, check_root: bool = True
) -> StudySpec:
    """Read a spec file, apply ``--data-root`` and ``--set`` overrides, validate."""
    path = Path(path)
    raw = read_yaml(path)
    if isinstance(raw, dict):
        if data_root is not None:
            if not isinstance(raw.get("dataset"), dict):
                raise SpecError(f"{path}: dataset: missing, cannot apply --data-root")
            raw["dataset"]["root"] = data_root
        for assignment in overrides or []:
            apply_override(raw, assignment)
    return validate(raw, source=str(path), check_root=check_root)


def uses_pretrained(spec: StudySpec) -> bool:
    """Whether any configuration of the space loads pretrained encoder weights."""
    from segtune import space

    param = space.parse_space(spec.space).get("encoder_weights")
    return param is not None and any(v is not None for v in param.possible_values())


def to_dict(spec: StudySpec) -> dict:
    return spec.model_dump(mode="json")


class RetrainSpec(_Strict):
    """What `segtune export` writes and `segtune retrain` reads: one fixed configuration to train."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
    dataset: DatasetSpec
    config: dict[str, Any]
    epochs: int = Field(ge=1)
    metric: Literal["val_miou", "val_dice", "val_pixel_acc"] = "val_miou"  # picks the best epoch, as in the search
    train: TrainSpec = TrainSpec()
    resources: ResourcesSpec = ResourcesSpec()  # what its slot asks of the Ray cluster: a trial's (the study's)
    seed: int = Field(
        0,
        ge=0,
        description="the training's seed (weights, batches, augmentation): another seed, "
        "another run of the same configuration, to see the spread",
    )
    provenance: dict[str, Any] = Field(default_factory=dict)

    def trial_config(self) -> TrialConfig:
        """The typed configuration: the written keys, documented defaults for the rest."""
        return TrialConfig.from_dict(self.config)


def load_retrain(path: str | Path, overrides: list[str] | None = None, trust_code: bool = False) -> RetrainSpec:
    """A retrain spec (what `segtune export` writes from a store): a model naming code outside segtune is refused
    before validation imports it, unless ``trust_code``."""
    path = Path(path)
    raw = read_yaml(path)
    if not isinstance(raw, dict):
        raise SpecError(f"{path}: (top level): expected a mapping with name, dataset, config, epochs")
    for assignment in overrides or []:
        apply_override(raw, assignment)
    try:
        spec = RetrainSpec.model_validate(raw)
    except ValidationError as e:
        raise SpecError(f"{path}: {_format_error(e)}") from None
    from segtune import space
    from segtune.training.models import refuse_code

    refuse_code(spec.config.get("arch"), trust_code, f"{path}: config.arch")
    try:
        space.validate_config(spec.config, num_classes(spec.dataset))
    except SpecError as e:
        raise SpecError(f"{path}: {e}") from None
    return spec
