"""The hand-written networks people compare smp's against, as architectures a spec can choose.

Each takes ``(in_channels, classes)`` like smp's models and returns logits at the input's size.
They ignore ``encoder`` and ``encoder_weights`` (trained from scratch). Input sides must be multiples
of 8 (of 16 for TinyViT), which segtune's image sizes (multiples of 32) always are.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def conv_block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class SCSE(nn.Module):
    """Concurrent spatial and channel squeeze & excitation (Roy et al. 2018): reweighs what a skip brings."""

    def __init__(self, channels: int, reduction: int = 4):
        super().__init__()
        self.channel = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(channels, max(1, channels // reduction), 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(max(1, channels // reduction), channels, 1),
            nn.Sigmoid(),
        )
        self.spatial = nn.Sequential(nn.Conv2d(channels, 1, 1), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.channel(x) + x * self.spatial(x)


class SmallUNet(nn.Module):
    """A 3-level U-Net. ``skip="concat"`` stacks encoder features onto the decoder's (Ronneberger et al.);
    ``skip="add"`` adds them (lighter, as in LinkNet). ``attention=True`` puts SCSE after every decoder block."""

    def __init__(
        self, in_channels: int = 3, classes: int = 2, base: int = 16, skip: str = "concat", attention: bool = False
    ):
        super().__init__()
        if skip not in ("concat", "add"):
            raise ValueError(f"skip must be concat or add, got {skip!r}")
        self.skip = skip
        widths = [base, base * 2, base * 4]
        self.down = nn.ModuleList(
            [conv_block(in_channels, widths[0]), conv_block(widths[0], widths[1]), conv_block(widths[1], widths[2])]
        )
        self.bottom = conv_block(widths[2], widths[2] * 2)
        self.up = nn.ModuleList()
        self.decode = nn.ModuleList()
        self.attend = nn.ModuleList()
        cin = widths[2] * 2
        for w in reversed(widths):
            self.up.append(nn.ConvTranspose2d(cin, w, 2, stride=2))
            self.decode.append(conv_block(w * 2 if skip == "concat" else w, w))
            self.attend.append(SCSE(w) if attention else nn.Identity())
            cin = w
        self.head = nn.Conv2d(widths[0], classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
            x = F.max_pool2d(x, 2)
        x = self.bottom(x)
        for up, decode, attend, skip in zip(self.up, self.decode, self.attend, reversed(skips), strict=True):
            x = up(x)
            x = torch.cat([x, skip], 1) if self.skip == "concat" else x + skip
            x = attend(decode(x))
        return self.head(x)


class SmallUNetAdd(SmallUNet):
    def __init__(self, in_channels: int = 3, classes: int = 2):
        super().__init__(in_channels, classes, skip="add")


class SCSEUNet(SmallUNet):
    def __init__(self, in_channels: int = 3, classes: int = 2):
        super().__init__(in_channels, classes, attention=True)


class SegNet(nn.Module):
    """SegNet (Badrinarayanan et al.): the decoder upsamples with the encoder's max-pooling indices."""

    def __init__(self, in_channels: int = 3, classes: int = 2, base: int = 16):
        super().__init__()
        widths = [base, base * 2, base * 4]
        self.enc = nn.ModuleList()
        cin = in_channels
        for w in widths:
            self.enc.append(conv_block(cin, w))
            cin = w
        self.dec = nn.ModuleList()
        for w, wout in zip(reversed(widths), [*reversed(widths[:-1]), widths[0]], strict=True):
            self.dec.append(conv_block(w, wout))
        self.head = nn.Conv2d(widths[0], classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        indices, sizes = [], []
        for block in self.enc:
            x = block(x)
            sizes.append(x.shape[-2:])
            x, idx = F.max_pool2d(x, 2, return_indices=True)
            indices.append(idx)
        for block, idx, size in zip(self.dec, reversed(indices), reversed(sizes), strict=True):
            x = F.max_unpool2d(x, idx, 2, output_size=size)
            x = block(x)
        return self.head(x)


class TinyViT(nn.Module):
    """A small ViT that segments from its patch tokens: 16 px patches, a transformer encoder, one linear
    layer per token giving the classes of its 16 x 16 pixels (the SETR-naive idea), upsampled smoothly."""

    def __init__(
        self,
        in_channels: int = 3,
        classes: int = 2,
        dim: int = 128,
        depth: int = 4,
        heads: int = 4,
        patch: int = 16,
        grid: int = 14,
    ):
        super().__init__()
        self.patch = patch
        self.embed = nn.Conv2d(in_channels, dim, patch, stride=patch)
        self.pos = nn.Parameter(torch.zeros(1, dim, grid, grid))
        nn.init.trunc_normal_(self.pos, std=0.02)
        layer = nn.TransformerEncoderLayer(
            dim, heads, dim * 4, dropout=0.0, activation="gelu", batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Conv2d(dim, classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        tokens = self.embed(x)  # (N, D, h, w)
        h, w = tokens.shape[-2:]
        pos = F.interpolate(self.pos, size=(h, w), mode="bilinear", align_corners=False)  # any input size
        seq = (tokens + pos).flatten(2).transpose(1, 2)  # (N, h*w, D)
        seq = self.norm(self.encoder(seq))
        grid = seq.transpose(1, 2).reshape(x.shape[0], -1, h, w)
        return F.interpolate(self.head(grid), size=size, mode="bilinear", align_corners=False)


NETS: dict[str, type[nn.Module]] = {
    "SmallUNet": SmallUNet,
    "SmallUNetAdd": SmallUNetAdd,
    "SCSEUNet": SCSEUNet,
    "SegNet": SegNet,
    "TinyViT": TinyViT,
}
