"""What `archcalc calibrate` times (archcalc.torch.calibrate measures it):
the convolution shapes, the GEMMs, the op sizes, and the order in which a
table takes them. Pure data and arithmetic: no torch here."""
from __future__ import annotations

from ..profiles.schedule import spread_order

# --------------------------------------------------------------------------
# the shapes: (kernel, stride, padding, cin, cout, input size, groups),
# one of every class first, then the stage shapes CNNs are built of.

CONV_GRID = [
    # one point of every class
    (3, 1, 1, 64, 64, 56, 1),        # 3x3 stride 1, the workhorse
    (1, 1, 0, 256, 64, 56, 1),       # 1x1: a plain GEMM
    (7, 2, 3, 3, 64, 224, 1),        # the 7x7 stride-2 stem (3 input channels)
    (3, 2, 1, 128, 256, 28, 1),      # 3x3 stride 2 (downsampling)
    (1, 2, 0, 256, 512, 56, 1),      # 1x1 stride 2 (projection shortcut)
    (5, 1, 2, 32, 96, 28, 1),        # 5x5
    (3, 1, 1, 96, 96, 56, "dw"),     # depthwise 3x3
    (3, 1, 1, 128, 128, 56, 32),     # grouped 3x3 (ResNeXt)
    (11, 4, 2, 3, 64, 224, 1),       # 11x11 stride 4 stem
    (3, 1, 1, 3, 64, 224, 1),        # 3x3 on the image (VGG's first conv)
    # 3x3 stride 1: equal widths, stage by stage
    (3, 1, 1, 128, 128, 28, 1), (3, 1, 1, 256, 256, 14, 1), (3, 1, 1, 512, 512, 7, 1),
    (3, 1, 1, 64, 64, 112, 1), (3, 1, 1, 256, 256, 28, 1), (3, 1, 1, 512, 512, 14, 1),
    (3, 1, 1, 32, 32, 112, 1), (3, 1, 1, 16, 16, 112, 1), (3, 1, 1, 128, 128, 56, 1),
    (3, 1, 1, 512, 512, 28, 1), (3, 1, 1, 64, 64, 224, 1),
    # 3x3 stride 1: widening and narrowing (x2, x1.5, /4: growth-rate convs)
    (3, 1, 1, 64, 128, 112, 1), (3, 1, 1, 128, 256, 56, 1), (3, 1, 1, 256, 512, 28, 1),
    (3, 1, 1, 64, 192, 56, 1), (3, 1, 1, 96, 128, 28, 1), (3, 1, 1, 128, 192, 28, 1),
    (3, 1, 1, 112, 224, 14, 1), (3, 1, 1, 160, 320, 7, 1), (3, 1, 1, 192, 384, 13, 1),
    (3, 1, 1, 384, 256, 13, 1), (3, 1, 1, 128, 32, 56, 1), (3, 1, 1, 128, 32, 28, 1),
    (3, 1, 1, 128, 32, 14, 1), (3, 1, 1, 128, 32, 7, 1), (3, 1, 1, 48, 64, 35, 1),
    (3, 1, 1, 32, 64, 147, 1),
    # 1x1: expand, reduce, equal; large and small maps
    (1, 1, 0, 64, 64, 56, 1), (1, 1, 0, 64, 256, 56, 1), (1, 1, 0, 128, 512, 28, 1),
    (1, 1, 0, 512, 128, 28, 1), (1, 1, 0, 256, 1024, 14, 1), (1, 1, 0, 1024, 256, 14, 1),
    (1, 1, 0, 512, 2048, 7, 1), (1, 1, 0, 2048, 512, 7, 1), (1, 1, 0, 192, 64, 28, 1),
    (1, 1, 0, 192, 16, 28, 1), (1, 1, 0, 480, 192, 14, 1), (1, 1, 0, 832, 384, 7, 1),
    (1, 1, 0, 128, 128, 56, 1), (1, 1, 0, 256, 128, 28, 1), (1, 1, 0, 512, 128, 14, 1),
    (1, 1, 0, 1024, 128, 7, 1), (1, 1, 0, 512, 256, 28, 1), (1, 1, 0, 1024, 512, 14, 1),
    (1, 1, 0, 32, 16, 112, 1), (1, 1, 0, 16, 96, 112, 1), (1, 1, 0, 144, 24, 56, 1),
    (1, 1, 0, 24, 144, 56, 1), (1, 1, 0, 192, 32, 28, 1), (1, 1, 0, 384, 64, 14, 1),
    (1, 1, 0, 960, 160, 7, 1), (1, 1, 0, 320, 1280, 7, 1), (1, 1, 0, 64, 64, 147, 1),
    # strided and large kernels
    (3, 2, 1, 64, 128, 56, 1), (3, 2, 1, 256, 512, 14, 1), (3, 2, 1, 3, 32, 224, 1),
    (3, 2, 0, 288, 384, 35, 1), (3, 2, 1, 32, 32, 112, 1),
    (1, 2, 0, 64, 128, 56, 1), (1, 2, 0, 512, 1024, 28, 1), (1, 2, 0, 1024, 2048, 14, 1),
    (5, 1, 2, 16, 32, 28, 1), (5, 1, 2, 24, 64, 14, 1), (5, 1, 2, 48, 128, 7, 1),
    (5, 1, 2, 96, 256, 27, 1), (5, 1, 2, 48, 64, 35, 1),
    (7, 1, 3, 128, 128, 17, 1), (7, 2, 1, 3, 96, 224, 1), (11, 4, 0, 3, 96, 227, 1),
    # depthwise and grouped
    (3, 2, 1, 96, 96, 112, "dw"), (3, 1, 1, 144, 144, 56, "dw"), (3, 1, 1, 192, 192, 28, "dw"),
    (3, 1, 1, 384, 384, 14, "dw"), (3, 1, 1, 960, 960, 7, "dw"), (3, 1, 1, 32, 32, 112, "dw"),
    (5, 1, 2, 240, 240, 28, "dw"), (5, 2, 2, 144, 144, 56, "dw"), (7, 1, 3, 96, 96, 56, "dw"),
    (3, 1, 1, 256, 256, 28, 32), (3, 1, 1, 512, 512, 14, 32), (3, 1, 1, 1024, 1024, 7, 32),
    (3, 2, 1, 256, 256, 56, 32),
    # small maps and narrow layers (CIFAR nets, LeNet): the call costs more than
    # the FLOPs, which no ImageNet-sized point shows
    (5, 1, 0, 1, 6, 32, 1), (5, 1, 0, 6, 16, 14, 1), (3, 1, 1, 16, 16, 32, 1),
    (3, 1, 1, 32, 32, 16, 1), (3, 1, 1, 64, 64, 8, 1), (3, 2, 1, 16, 32, 32, 1),
    (1, 1, 0, 16, 64, 32, 1), (1, 1, 0, 64, 16, 32, 1), (3, 1, 1, 3, 16, 32, 1),
    (3, 1, 1, 16, 16, 32, "dw"), (3, 1, 1, 64, 64, 8, "dw"),
    # a conv onto a 1x1 map (LeNet's C5, a fc layer written as a conv): no
    # other point has so few output positions
    (5, 1, 0, 16, 120, 5, 1),
]

LINEAR_GRID = [  # (K in, N out)
    (512, 1000), (4096, 4096), (9216, 4096), (25088, 4096), (2048, 1000), (4096, 1000),
    (1024, 1000), (1280, 1000), (768, 3072), (3072, 768), (400, 120), (1024, 10),
    (120, 84), (84, 10), (64, 10),
]

QUICK_CONV = 10   # quick mode: the one-of-every-class points only
BATCHES = (1, 8, 32)
GPU_BATCHES = (1, 16, 64)   # a GPU is used at larger batches: 64 is timed first

OP_SIZES = (2 ** 14, 2 ** 16, 2 ** 18, 2 ** 20, 2 ** 22, 2 ** 24)
QUICK_OPS = ("relu", "batch_norm", "add", "cat", "maxpool3s2", "global_avgpool", "copy")


def conv_out(n, k, s, p):
    return (n + 2 * p - k) // s + 1


def table_jobs(device, channels_last, quick, op_names):
    """Every point a table plans, as (kind, payload), each kind in priority
    order: one conv of every class first (at the batch timed first), the
    main GEMM rows, every op at two sizes across the range before a third
    (an op missing from the profile is rated as a relative, which can be far
    off: LRN is no batch norm); the scheduler (profiles/schedule.py) shares
    the table's time between the kinds."""
    convs = CONV_GRID[:QUICK_CONV] if quick else CONV_GRID
    op_names = [n for n in op_names if n in QUICK_OPS] if quick else list(op_names)
    gpu = device == "cuda"
    op_sizes = OP_SIZES[1:5] if quick else OP_SIZES + ((2 ** 26,) if gpu else ())
    # FLOPs per timed conv call; a GPU runs a teraFLOP in milliseconds
    cap = (1.5e9 if quick else 6e9) * (200 if gpu else 1)
    batches = (8,) if quick else (GPU_BATCHES if gpu else BATCHES)
    main = 64 if gpu and not quick else 8    # the batch timed first
    first_m = (16, 64) if gpu else (8, 32)   # the GEMM rows timed first

    jobs = []  # (priority, order, kind, payload)
    for i, point in enumerate(convs):
        k, s, p, cin, cout, n, groups = point
        g = cin if groups == "dw" else groups
        o = conv_out(n, k, s, p)
        per_sample = 2 * cout * o * o * cin // g * k * k
        for j, b in enumerate(batches):
            if per_sample * b > cap and b != min(batches):
                continue
            if per_sample * b > 4 * cap:
                continue
            if not gpu and b > 8 and o > 14:   # a CPU's large maps saturate by batch 8
                continue
            rank = (0 if i < QUICK_CONV else 1) + (0 if b == main else 1 + j)
            jobs.append((rank, len(jobs), "conv", (point, b)))
    if not channels_last:   # only the kinds that depend on the layout
        for i, (k, n) in enumerate(LINEAR_GRID[:6] if quick else LINEAR_GRID):
            ms = (8, 32) if quick else (1, 16, 64, 256, 2048, 16384) if gpu else (1, 8, 32, 128)
            for m in ms:
                if 2 * m * k * n <= 2 * cap:
                    jobs.append((0 if i < 4 and m in first_m else 2, len(jobs), "linear",
                                 (m, k, n)))
    order = spread_order(len(op_sizes))
    for i, name in enumerate(op_names):
        for j, size in enumerate(op_sizes):
            rank = 0 if name in QUICK_OPS or size <= 4 * 2 ** 20 else 1
            jobs.append((rank, order.index(j) * 100 + i, "op", (name, size)))
    jobs.sort()
    return [(kind, payload) for _, _, kind, payload in jobs]
