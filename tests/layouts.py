"""Dataset folders as real datasets ship them, generated small (64 px) with a known foreground.

Each writer lays out one public convention (DRIVE, CHASE_DB1, ISIC, Carvana, Kvasir-SEG, ...) or one awkward
case people meet (lossy masks, masks at another size, a greyscale copy of the pictures, masks shipped twice)
and returns what a correct reading must find: the pairs, the classes, how the masks are read, and where the
foreground is, so a test can check the decoded masks, not only that a command exited 0.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

H = W = 64
SQUARE = (16, 40, 20, 44)  # rows 16..39, columns 20..43: the foreground every fixture draws (class 1)
SECOND = (44, 58, 4, 18)  # a second class, where a fixture has one (class 2)
RED, GREEN = (200, 30, 30), (30, 170, 60)


@dataclass
class Expected:
    """What init must find in a fixture folder."""

    pairs: int
    classes: int
    read: dict = field(default_factory=dict)  # dataset fields the spec must hold (values, lossy_masks, ...)
    foreground: dict[int, tuple[int, int, int, int]] = field(default_factory=lambda: {1: SQUARE})
    lossy: bool = False  # decoded masks may differ from the squares along their edges (JPEG noise, ignored)
    choice: str | None = None  # a CHOICE the spec must state (the alternative it names)
    # colour-coded masks: each drawn class's colour (which index a colour gets is init's to choose: colour order)
    colours: dict[int, tuple[int, int, int]] = field(default_factory=dict)


def photo(rng: np.random.Generator, h: int = H, w: int = W, fg: dict | None = None) -> np.ndarray:
    """A textured picture whose foreground regions are tinted (a model can learn them in an epoch)."""
    image = rng.integers(60, 140, (h, w, 3), dtype=np.uint8)
    for cls, (y0, y1, x0, x1) in (fg or {1: SQUARE}).items():
        sy, sx = h / H, w / W
        tint = RED if cls == 1 else GREEN
        image[round(y0 * sy) : round(y1 * sy), round(x0 * sx) : round(x1 * sx)] = tint
    return image


def label_map(h: int = H, w: int = W, fg: dict | None = None) -> np.ndarray:
    """Class indices (0 background) with the foreground regions at their known place, scaled to h x w."""
    out = np.zeros((h, w), np.uint8)
    for cls, (y0, y1, x0, x1) in (fg or {1: SQUARE}).items():
        sy, sx = h / H, w / W
        out[round(y0 * sy) : round(y1 * sy), round(x0 * sx) : round(x1 * sx)] = cls
    return out


def save(array: np.ndarray, path: Path, **kwargs: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, **kwargs)


def jpeg(array: np.ndarray, path: Path, quality: int = 90) -> None:
    """As a JPEG file, the way lossy masks ship (Kvasir-SEG's: RGB, three equal channels)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, "JPEG", quality=quality)
    path.write_bytes(buf.getvalue())


def drive(root: Path, rng: np.random.Generator) -> Expected:
    """DRIVE: training/images/21_training.tif with training/1st_manual/21_manual1.gif; test/ names its pictures
    01_test.tif. GIF masks, TIFF pictures."""
    for split, ids, name in (("training", range(21, 29), "training"), ("test", range(1, 5), "test")):
        for i in ids:
            save(photo(rng), root / split / "images" / f"{i:02d}_{name}.tif")
            save(label_map() * 255, root / split / "1st_manual" / f"{i:02d}_manual1.gif")
    return Expected(12, 2, {"classes": ["background", "foreground"]})


def chase(root: Path, rng: np.random.Generator) -> Expected:
    """CHASE_DB1: Image_01L.jpg beside Image_01L_1stHO.png and a second annotator's Image_01L_2ndHO.png."""
    for i in range(1, 6):
        for eye in "LR":
            save(photo(rng), root / f"Image_{i:02d}{eye}.jpg", quality=95)
            save(label_map() * 255, root / f"Image_{i:02d}{eye}_1stHO.png")
            second = label_map()
            second[SQUARE[0] : SQUARE[0] + 2] = 0  # the second annotator draws a little less
            save(second * 255, root / f"Image_{i:02d}{eye}_2ndHO.png")
    return Expected(10, 2, {"masks": "Image_*_1stHO.png"}, choice="_2ndHO.png")


def isic(root: Path, rng: np.random.Generator) -> Expected:
    """ISIC: ISIC_0000000.jpg with ISIC_0000000_segmentation.png, in folders of their own."""
    for i in range(10):
        save(photo(rng), root / "ISIC2018_Task1-2_Training_Input" / f"ISIC_{i:07d}.jpg", quality=95)
        save(label_map() * 255, root / "ISIC2018_Task1_Training_GroundTruth" / f"ISIC_{i:07d}_segmentation.png")
    return Expected(10, 2)


def carvana(root: Path, rng: np.random.Generator) -> Expected:
    """Carvana: train/x_01.jpg with train_masks/x_01_mask.gif (several views of each car)."""
    for car in ("00087a6bd4dc", "02159e548029", "03a857ce842d", "0495dcf27283", "0789bed99cb8"):
        for view in (1, 2):
            save(photo(rng), root / "train" / f"{car}_{view:02d}.jpg", quality=95)
            save(label_map() * 255, root / "train_masks" / f"{car}_{view:02d}_mask.gif")
    return Expected(10, 2)


def grey_jpeg_masks(root: Path, rng: np.random.Generator) -> Expected:
    """Kvasir-SEG's convention: images/x.jpg and masks/x.jpg, binary masks stored as JPEG (RGB, equal channels)."""
    for i in range(10):
        name = f"cju{i:04d}qkwl35piu0993l"
        save(photo(rng), root / "images" / f"{name}.jpg", quality=95)
        jpeg(np.repeat((label_map() * 255)[..., None], 3, axis=2), root / "masks" / f"{name}.jpg")
    return Expected(10, 2, {"values": {0: 0, 255: 1}, "lossy_masks": "nearest"}, lossy=True)


def field_set(root: Path, rng: np.random.Generator) -> Expected:
    """Colour-coded class annotations and a second folder of binary masks of the same photos, each kind with its
    own name suffix, and the official split in a YAML file."""
    fg = {1: SQUARE, 2: SECOND}
    ids = [f"f{i:03d}" for i in range(12)]
    for name in ids:
        save(photo(rng, fg=fg), root / "images" / f"{name}_rgb.jpg", quality=95)
        labels = label_map(fg=fg)
        colours = np.zeros((H, W, 3), np.uint8)
        colours[labels == 1], colours[labels == 2] = RED, GREEN
        save(colours, root / "annotations" / f"{name}_annotation.png")
        save((labels > 0).astype(np.uint8) * 255, root / "masks" / f"{name}_mask.png")
    (root / "split.yaml").write_text(yaml.safe_dump({"train": ids[:8], "val": ids[8:10], "test": ids[10:]}))
    read = {"colors": {"0,0,0": 0, "200,30,30": 1, "30,170,60": 2}, "split": {"file": "split.yaml"}}
    return Expected(12, 3, read, foreground=fg, choice="masks/*_mask.png")


def object_set(root: Path, rng: np.random.Generator) -> Expected:
    """Photos, a greyscale copy of them, and JPEG masks in a folder of an unusual name, each mask stored at
    another size than its photo (the same aspect ratio)."""
    for i in range(10):
        picture = photo(rng, 48, 64)
        save(picture, root / "photos" / f"{i:04d}.jpg", quality=95)
        save(np.asarray(Image.fromarray(picture).convert("L")), root / "gray" / f"{i:04d}.jpg", quality=95)
        scale = (0.5, 2.0)[i % 2]
        h, w = round(48 * scale), round(64 * scale)
        jpeg(label_map(h, w) * 255, root / "seg" / f"{i:04d}.jpg")
    read = {"images": "photos/*.jpg", "masks": "seg/*.jpg", "lossy_masks": "nearest", "mask_resize": "nearest"}
    return Expected(10, 2, read, lossy=True)


def masks_twice(root: Path, rng: np.random.Generator) -> Expected:
    """Every mask shipped twice, as BMP and as a JPEG copy beside it: the lossless copy is the one to read."""
    for i in range(10):
        save(photo(rng), root / "images" / f"IMD{i:03d}.bmp")
        mask = label_map() * 255
        save(mask, root / "masks" / f"IMD{i:03d}_lesion.bmp")
        jpeg(mask, root / "masks" / f"IMD{i:03d}_lesion.jpg")
    return Expected(10, 2, {"masks": "masks/*_lesion.bmp"}, choice="_lesion.jpg")


def jpeg_colours(root: Path, rng: np.random.Generator) -> Expected:
    """Colour-coded masks stored as JPEG: colours smeared around their codes."""
    fg = {1: SQUARE, 2: SECOND}
    for i in range(10):
        save(photo(rng, fg=fg), root / "img" / f"s{i}.png")
        labels = label_map(fg=fg)
        colours = np.zeros((H, W, 3), np.uint8)
        colours[labels == 1], colours[labels == 2] = RED, GREEN
        jpeg(colours, root / "lbl" / f"s{i}.jpg", quality=92)
    return Expected(10, 3, {"lossy_masks": "nearest"}, foreground=fg, lossy=True, colours={1: RED, 2: GREEN})


def resized_masks(root: Path, rng: np.random.Generator) -> Expected:
    """Lossless masks at half and at double their picture's size."""
    for i in range(10):
        save(photo(rng, 48, 64), root / "images" / f"{i}.png")
        scale = (0.5, 2.0)[i % 2]
        save(label_map(round(48 * scale), round(64 * scale)), root / "masks" / f"{i}.png")
    return Expected(10, 2, {"mask_resize": "nearest"})


def split_conflict(root: Path, rng: np.random.Generator) -> Expected:
    """A split file (YAML) that lists one id in two splits."""
    ids = [f"case{i}" for i in range(10)]
    for name in ids:
        save(photo(rng), root / "images" / f"{name}.png")
        save(label_map() * 255, root / "masks" / f"{name}.png")
    (root / "splits.yaml").write_text(yaml.safe_dump({"train": ids[:7], "val": ids[7:9], "test": [ids[0], ids[9]]}))
    return Expected(10, 2, {"split": {"file": "splits.yaml", "wins": "test"}})


def formats(root: Path, rng: np.random.Generator) -> Expected:
    """Greyscale pictures (read as RGB) with 16-bit TIFF masks holding 0/1."""
    (root / "labels").mkdir(parents=True)
    for i in range(10):
        grey = np.asarray(Image.fromarray(photo(rng)).convert("L"))
        save(grey, root / "pictures" / f"p{i}.png")
        Image.fromarray(label_map().astype(np.uint16)).save(root / "labels" / f"p{i}.tif")
    return Expected(10, 2, {"classes": ["background", "class_1"]})


def palette_masks(root: Path, rng: np.random.Generator) -> Expected:
    """Palette PNG masks whose palette is grey but reordered (index 0 white): read as the greys they show."""
    for i in range(10):
        save(photo(rng), root / "images" / f"{i}.jpg", quality=95)
        mask = Image.fromarray(np.where(label_map() > 0, 0, 1).astype(np.uint8), mode="P")
        mask.putpalette([255, 255, 255, 0, 0, 0] + [0, 0, 0] * 254)  # index 0 white (the square), 1 black
        (root / "masks").mkdir(exist_ok=True)
        mask.save(root / "masks" / f"{i}.png")
    return Expected(10, 2, {"classes": ["background", "foreground"]})


def one_bit_masks(root: Path, rng: np.random.Generator) -> Expected:
    """1-bit PNG masks: read as 0/255, like the same picture in 8 bits."""
    for i in range(10):
        save(photo(rng), root / "images" / f"{i}.jpg", quality=95)
        (root / "masks").mkdir(exist_ok=True)
        Image.fromarray(label_map() * 255).convert("1").save(root / "masks" / f"{i}.png")
    return Expected(10, 2, {"classes": ["background", "foreground"]})


CONVENTIONS: dict[str, Callable[[Path, np.random.Generator], Expected]] = {
    "drive": drive,
    "chase": chase,
    "isic": isic,
    "carvana": carvana,
    "grey-jpeg-masks": grey_jpeg_masks,
    "field-set": field_set,
    "object-set": object_set,
    "masks-twice": masks_twice,
    "jpeg-colours": jpeg_colours,
    "resized-masks": resized_masks,
    "split-conflict": split_conflict,
    "formats": formats,
    "palette-masks": palette_masks,
    "one-bit-masks": one_bit_masks,
}
