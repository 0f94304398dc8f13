"""What the window kinds' ``from_torch`` hooks read of timm's Swin modules
(swin_transformer, swin_transformer_v2, swin_transformer_v2_cr), torch-free:
the window and shift a block clipped to its map, Swin V2's bias layout, the
map a patch merging reads as tokens."""
from __future__ import annotations

from .from_torch import NoMapping, pair


def v2_args(m):
    """Swin V2's layout of the qkv bias (timm's q_bias and v_bias, the k bias a
    zero buffer) and the window its position coordinates are scaled to."""
    pretrained = tuple(int(v) for v in getattr(m, "pretrained_window_size", (0, 0)))
    return dict(k_bias=getattr(m, "q_bias", None) is None,
                pretrained_window=pair(pretrained) if any(pretrained) else None)


def merged_map(call):
    """(h, w) of the map a patch merging reads as tokens (timm's blocks end on
    a reshape): the h x w = N whose halves, rounded up, are its output's."""
    n, y = call.x_torch[0], call.y_torch or ()
    found = {(h, w) for h in (2 * y[0] - 1, 2 * y[0]) for w in (2 * y[1] - 1, 2 * y[1])
             if h * w == n} if len(y) == 3 else set()
    if len(found) != 1:
        raise NoMapping(f"patch merging of {n} tokens into a {list(y)} map")
    return found.pop()


def timm_windows(call, block, what):
    """(window, shift, h, w, roll_first) of timm's Swin block's windowed
    attention, the window and shift as the block clipped them to its map.
    timm rolls the map, then pads it to whole windows (torchvision: pads, then
    rolls, and drops a shift where the padded map is one window): roll_first
    where the two differ (a shifted map that does not divide into windows)."""
    if len(call.x) != 2:
        raise NoMapping(f"{what} on a {len(call.x)}-d input (it takes tokens)")
    # its input may be the tokens a reshape to B x H x W x C reads: the output's map
    hwc = call.x_torch if len(call.x_torch) == 3 else call.y_torch or ()
    if len(hwc) != 3 or hwc[0] * hwc[1] != call.x[0]:
        raise NoMapping(f"{what} on a {list(call.x_torch)} input (it takes B x H x W x C)")
    h, w = int(hwc[0]), int(hwc[1])
    window = tuple(int(v) for v in block.window_size)
    shift = tuple(int(v) for v in block.shift_size)
    if tuple(block.attn.window_size) != window or any(s >= m for s, m in zip(shift, window)):
        raise NoMapping(f"{what}: a shift of {list(shift)} in windows of {list(window)}")
    return window, shift, h, w, any(s and (side % m or m >= side)
                                    for side, m, s in zip((h, w), window, shift))
