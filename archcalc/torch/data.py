"""Data for `archcalc train`: tensors made here or read from local files; no
downloads. Every source gives (train_x, train_y, test_x, test_y) as float
images of the spec's input shape and integer labels."""
from __future__ import annotations

import os
import pickle

import torch
from torch.nn import functional as F

from ..errors import SpecError, require

SOURCES = ("synthetic", "digits", "digits-distorted", "cifar10:DIR", "imagefolder:DIR")


CIFAR_FILES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]


def check_source(source: str) -> tuple[int | None, int | None]:
    """Refuse a --data source that cannot be read, before anything is loaded.
    Returns (images it holds at most, training images where known exactly),
    None when unknown: for the memory check and the batch's check."""
    kind, _, folder = source.partition(":")
    if kind == "synthetic" and not folder:
        return 640, 512
    if kind in ("digits", "digits-distorted") and not folder:
        return 1797, 1797 - int(1797 * 0.2)
    if kind == "cifar10" and folder:
        if not os.path.isdir(folder):
            raise SpecError(f"--data cifar10:{folder}: no such folder")
        missing = [n for n in CIFAR_FILES if not os.path.isfile(os.path.join(folder, n))]
        if missing:
            raise SpecError(f"--data cifar10:{folder}: missing {', '.join(missing)} (the python "
                            "version of CIFAR-10: data_batch_1..5 and test_batch)")
        # 3,072 bytes of pixels per image: the files' sizes bound the count
        return sum(os.path.getsize(os.path.join(folder, n)) for n in CIFAR_FILES) // 3072 + 1, None
    if kind == "imagefolder" and folder:
        if not os.path.isdir(folder):
            raise SpecError(f"--data imagefolder:{folder}: no such folder")
        if not os.path.isdir(os.path.join(folder, "train")) or not any(
                os.path.isdir(os.path.join(folder, d)) for d in ("test", "val")):
            raise SpecError(f"--data imagefolder:{folder}: needs train/ and test/ (or val/) "
                            "folders with one subfolder per class")
        n = 0
        for _, _, files in os.walk(folder):
            n += len(files)
        return n, None
    raise SpecError(f"--data takes one of {', '.join(SOURCES)}. Received: {source!r}")


def load_data(source: str, shape: tuple, classes: int, seed: int):
    check_source(source)
    kind, _, folder = source.partition(":")
    if kind == "synthetic" and not folder:
        return synthetic(shape, classes, seed)
    if kind == "digits" and not folder:
        return digits(shape, seed)
    if kind == "digits-distorted" and not folder:
        return digits(shape, seed, distort=True)
    if kind == "cifar10" and folder:
        return cifar10(folder, shape)
    if kind == "imagefolder" and folder:
        return image_folder(folder, shape)
    raise SpecError(f"--data takes one of {', '.join(SOURCES)}. Received: {source!r}")


def fit(images: torch.Tensor, shape: tuple) -> torch.Tensor:
    """Images (N, C, H, W) resized to the spec's input, channels repeated if needed."""
    c, h, w = shape
    if images.shape[1] != c:
        if images.shape[1] == 1:
            images = images.expand(-1, c, -1, -1)
        elif c == 1:
            images = images.mean(1, keepdim=True)
        else:
            raise SpecError(f"the data has {images.shape[1]} channels, the spec takes {c}")
    if images.shape[2:] != (h, w):
        images = F.interpolate(images, size=(h, w), mode="bilinear", align_corners=False)
    return images.contiguous()


def synthetic(shape, classes, seed, n_train=512, n_test=128):
    """Learnable noise: each class adds its own fixed pattern to Gaussian noise."""
    g = torch.Generator().manual_seed(seed)
    patterns = 0.2 * torch.randn(classes, *shape, generator=g)

    def make(n):
        y = torch.randint(0, classes, (n,), generator=g)
        return torch.randn(n, *shape, generator=g) + patterns[y], y
    return (*make(n_train), *make(n_test))


def digits(shape, seed, test_fraction=0.2, distort=False):
    """scikit-learn's bundled 8x8 handwritten digits (1,797 images, values 0..16).
    ``distort``: each digit (train and test alike) enlarged to 16 x 16 on a
    32 x 32 canvas and moved by its own random affine map (see ``distorted``),
    as Jaderberg et al.'s rotated, scaled and translated MNIST."""
    datasets = require("sklearn.datasets", "train", "--data digits")
    bunch = datasets.load_digits()
    x = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(bunch.target, dtype=torch.long)
    if distort:
        x = distorted(x, seed)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    n_test = int(len(y) * test_fraction)
    test, train = order[:n_test], order[n_test:]
    x = fit(x, shape)
    x = (x - x[train].mean()) / x[train].std()  # standardized with the training statistics
    return x[train], y[train], x[test], y[test]


ROTATION_DEG, SCALE, SHIFT = 45.0, (0.7, 1.2), 0.15


def distorted(x: torch.Tensor, seed: int, canvas: int = 32) -> torch.Tensor:
    """Digits (N, 1, 8, 8) -> (N, 1, canvas, canvas): enlarged to half the
    canvas, centred, then each rotated by up to +-45 degrees, scaled by 0.7 to
    1.2 and shifted by up to 15% of the canvas along each axis (one fixed draw
    per image from ``seed``), with bilinear sampling."""
    n = len(x)
    side = canvas // 2
    x = F.interpolate(x, size=(side, side), mode="bilinear", align_corners=False)
    pad = (canvas - side) // 2
    x = F.pad(x, (pad, canvas - side - pad, pad, canvas - side - pad))
    g = torch.Generator().manual_seed(seed + 12345)
    angle = (torch.rand(n, generator=g) * 2 - 1) * ROTATION_DEG * torch.pi / 180
    scale = SCALE[0] + torch.rand(n, generator=g) * (SCALE[1] - SCALE[0])
    shift = (torch.rand(n, 2, generator=g) * 2 - 1) * SHIFT * 2   # [-1, 1] spans the canvas
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1),
                         torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, [n, 1, canvas, canvas], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


class _ArrayUnpickler(pickle.Unpickler):
    """CIFAR-10's batches are pickles: dicts of bytes, lists and numpy arrays.
    Only numpy's array reconstruction may be named; any other global (os.system,
    builtins.eval, ...) is refused, so a crafted file runs no code."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype"),
               ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar")}

    def find_class(self, module, name):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refused to load {module}.{name}: a data batch holds "
                                     "only arrays, lists and bytes")


def load_batch(fh):
    return _ArrayUnpickler(fh, encoding="bytes").load()


def cifar10(folder, shape):
    """The standard python-pickle CIFAR-10 batches (data_batch_1..5, test_batch)."""
    parts = []
    for name in CIFAR_FILES:
        try:
            with open(os.path.join(folder, name), "rb") as fh:
                batch = load_batch(fh)
            data = torch.tensor(batch[b"data"], dtype=torch.uint8).view(-1, 3, 32, 32)
            labels = torch.tensor(batch[b"labels"], dtype=torch.long)
            if len(labels) != len(data) or (len(labels) and not 0 <= int(labels.min())
                                            <= int(labels.max()) < 10):
                raise ValueError("labels do not match the images (10 classes)")
        except (OSError, pickle.UnpicklingError, KeyError, EOFError, ValueError, RuntimeError,
                TypeError, IndexError, AttributeError) as e:
            raise SpecError(f"--data cifar10:{folder}: cannot read {name}: {e}") from None
        parts.append((fit(data.float() / 255.0, shape), labels))
    train_x = torch.cat([p[0] for p in parts[:5]])
    train_y = torch.cat([p[1] for p in parts[:5]])
    return train_x, train_y, parts[5][0], parts[5][1]


def image_folder(folder, shape):
    """FOLDER/train/CLASS/*.png and FOLDER/test/CLASS/*.png (or val/), via torchvision."""
    datasets = require("torchvision.datasets", "vision", "--data imagefolder")
    transforms = require("torchvision.transforms", "vision", "--data imagefolder")
    test_dir = next((os.path.join(folder, d) for d in ("test", "val")
                     if os.path.isdir(os.path.join(folder, d))), None)
    if not os.path.isdir(os.path.join(folder, "train")) or test_dir is None:
        raise SpecError(f"--data imagefolder:{folder}: needs train/ and test/ (or val/) "
                        "folders with one subfolder per class")
    tf = transforms.Compose([transforms.Resize(shape[1:]), transforms.ToTensor()])
    out = []
    for d in (os.path.join(folder, "train"), test_dir):
        try:
            ds = datasets.ImageFolder(d, transform=tf)
            xs, ys = zip(*[ds[i] for i in range(len(ds))])
        except (OSError, RuntimeError, FileNotFoundError, ValueError) as e:
            raise SpecError(f"--data imagefolder:{folder}: cannot read {d}: {e}") from None
        out += [fit(torch.stack(xs), shape), torch.tensor(ys)]
    return tuple(out)
