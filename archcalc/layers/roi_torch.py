"""PyTorch modules of the kinds in ``roi.py`` that torch.nn lacks.

Imported only by those kinds' ``build`` (and ``module_classes``), so the
analysis never imports torch. ``archcalc export --to python`` copies each
class into the exported file with ``inspect.getsource``: a class here uses
only ``torch``, ``nn`` and ``F`` (no other module-level name)."""
from __future__ import annotations

import torch
from torch import nn


class RoIPool(nn.Module):
    """RoI pooling ("max", Fast R-CNN) or RoI align ("align", Mask R-CNN) of
    ``regions`` boxes per image over the feature map, each to ``output`` bins,
    returned as (batch, regions, C*oh*ow). The boxes are generated, the same
    for every image: low-discrepancy centres, 10% to 50% of the image per
    side, clipped to it (image size = map size x stride). A detector would
    feed its proposals instead."""

    def __init__(self, output, regions: int, stride: int = 16, mode: str = "max",
                 sampling: int = 2, aligned: bool = True):
        super().__init__()
        self.output = tuple(int(v) for v in output)
        self.regions, self.stride, self.mode = int(regions), int(stride), mode
        self.sampling, self.aligned = int(sampling), bool(aligned)

    @property
    def init_args(self):
        return (list(self.output), self.regions, self.stride, self.mode, self.sampling,
                self.aligned)

    @staticmethod
    def boxes(regions: int, height: float, width: float, device=None):
        """(regions, 4) boxes x1, y1, x2, y2 in image pixels, deterministic."""
        i = torch.arange(regions, dtype=torch.float32, device=device) + 1
        frac = lambda a: torch.remainder(i * a, 1.0)  # noqa: E731
        cx, cy = frac(0.6180339887) * width, frac(0.7548776662) * height
        w, h = (0.1 + 0.4 * frac(0.5698402910)) * width, (0.1 + 0.4 * frac(0.4301597090)) * height
        return torch.stack([(cx - w / 2).clamp(0, width), (cy - h / 2).clamp(0, height),
                            (cx + w / 2).clamp(0, width), (cy + h / 2).clamp(0, height)], 1)

    def forward(self, x):
        from torchvision import ops
        n, _, height, width = x.shape
        boxes = self.boxes(self.regions, height * self.stride, width * self.stride, x.device)
        index = torch.arange(n, dtype=boxes.dtype, device=x.device).repeat_interleave(
            self.regions)[:, None]
        rois = torch.cat([index, boxes.repeat(n, 1)], 1).to(x.dtype)
        if self.mode == "max":
            y = ops.roi_pool(x, rois, self.output, 1.0 / self.stride)
        else:
            y = ops.roi_align(x, rois, self.output, 1.0 / self.stride, self.sampling,
                              self.aligned)
        return y.reshape(n, self.regions, -1)

    def extra_repr(self):
        return (f"output={self.output}, regions={self.regions}, stride={self.stride}, "
                f"mode={self.mode!r}" + (f", sampling={self.sampling}, aligned={self.aligned}"
                                         if self.mode != "max" else ""))
