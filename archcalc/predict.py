"""Predict a step's time before running it: per layer, from the layer's shape
and a device profile that `archcalc calibrate` measured.

The model. Each row's ops say what they run (``Kind.cost``, in each kind's
own module beside its FLOPs rule) as primitives a profile rates:

- a convolution: t = max(flops / rate, bytes / bandwidth) + overhead, where
  the rate is interpolated from the calibrated convolutions nearest in shape
  (kernel class, stride, dense/grouped/depthwise; then the GEMM dims M =
  batch*Hout*Wout, N = Cout/groups, K = Cin/groups*kh*kw in log space,
  inverse-distance weighted), and the bandwidth is the copy bandwidth at the
  layer's working set (weights + input + output);
- a fully connected layer (a GEMM): the same, from the calibrated GEMMs;
- every other op (relu, batch norm, pools, LRN, add, concat, dropout, ...):
  its calibrated table's time at that many elements (log-log interpolation
  between the measured sizes, so caches are in the curve), times the kind's
  scale; the per-op overhead is in the measured times;
- the backward pass: the calibrated backward of the same primitive (for
  convolutions and GEMMs a rate of their own; the first weighted layer
  computes no input gradient, so half the FLOPs); a merge's backward adds the
  gradient accumulation where its input forked;
- a train step: forward (train-mode tables) + backward + the SGD-momentum
  step (calibrated per parameter tensor, by size);
- the network context (a CPU): calibration times each op in a loop, so an op
  whose reads (input and weights) fit the core's L2 (the profile's
  ``cache.l2_bytes``) ran with its data in the L2; in a network the other
  layers' tensors pass through the L2 between its calls, so it reads and
  writes its bytes at the bandwidth of memory beyond the caches instead
  (``Predictor.context_s``: bytes / far bandwidth - bytes / the bandwidth at its
  working set, once forward and twice backward). Nets of many small layers
  (ShuffleNet, the CIFAR ResNets) are made of exactly such ops.

Each layer's bound is the largest part of its time: compute (FLOPs at the
calibrated rate), memory (bytes at the bandwidth; every elementwise op), or
overhead (the per-op cost of the call, for tiny ops).

The profile is read and validated in archcalc/profiles/ (rates.py, schema.py);
what a prediction asked of it is checked against what it holds there too
(trust.py): a table the spec needs and the profile lacks is an error, a thin
one or a profile measured under load a warning on the Prediction.

Pure analysis: this module never imports torch.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

from . import sym
from .analysis import DTYPES, analyze
from .errors import SpecError
from .layers.base import Cost, NoCostModel
from .profiles.rates import (Profile, conv_class, conv_flops, interp, load_profile,  # noqa: F401
                             loglog_time, op_relatives)
from .profiles.schema import PROFILE_FORMAT, PROFILE_VERSION, ProfileError  # noqa: F401
from .profiles.trust import Usage, warnings_for

MODES = ("inference", "train")


# --------------------------------------------------------------------------
# the prediction


@dataclass
class LayerPrediction:
    index: int
    name: str
    type: str
    forward_ms: float
    backward_ms: float
    bound: str                  # compute | memory | overhead
    flops: int                  # forward, at this batch
    compute_ms: float = 0.0
    memory_ms: float = 0.0
    overhead_ms: float = 0.0

    @property
    def total_ms(self) -> float:
        return self.forward_ms + self.backward_ms

    def as_json(self) -> dict:
        return asdict(self)


@dataclass
class Prediction:
    model: str
    batch: int
    mode: str
    dtype: str
    device: str
    forward_ms: float
    backward_ms: float
    optimizer_ms: float
    other_ms: float
    step_ms: float
    samples_per_s: float
    bound_ms: dict
    layers: list = field(default_factory=list)
    notes: list = field(default_factory=list)
    warnings: list = field(default_factory=list)   # reasons not to trust it (profiles/trust.py)

    def as_json(self, layers: bool = True) -> dict:
        d = {k: v for k, v in asdict(self).items() if k not in ("layers", "notes", "warnings")}
        if layers:
            d["layers"] = [layer.as_json() for layer in self.layers]
        return d


class _Parts:
    """Seconds of one layer, split into compute, memory and overhead."""

    def __init__(self):
        self.compute = self.memory = self.overhead = 0.0

    def add(self, compute=0.0, memory=0.0, overhead=0.0, scale=1.0):
        self.compute += compute * scale
        self.memory += memory * scale
        self.overhead += overhead * scale

    def merge(self, other: "_Parts | None"):
        if other is not None:
            self.add(other.compute, other.memory, other.overhead)
        return self

    @property
    def total(self):
        return self.compute + self.memory + self.overhead


class _Timeline:
    """The host and the device, each with its clock: an op is launched when the
    host has launched the ones before it (host += its launch time) and runs
    when it is launched and the device is free (device = max(device, host) +
    its kernel time). What the device's clock advances by is the op's share of
    the step: the wait for the host counted as overhead, the rest as the op's
    bound."""

    def __init__(self):
        self.host = self.device = 0.0

    def run(self, events) -> _Parts:
        parts = _Parts()
        for host_s, device_s, bound in events:
            self.host += host_s
            start = max(self.device, self.host)
            waited = start - self.device
            self.device = start + device_s
            parts.add(overhead=waited)
            if bound == "compute":
                parts.add(compute=device_s)
            elif bound == "memory":
                parts.add(memory=device_s)
            else:
                parts.add(overhead=device_s)
        return parts

    def finish(self) -> float:
        """Seconds the host still runs after the device's last kernel (the
        step ends when both have)."""
        extra = max(0.0, self.host - self.device)
        self.device += extra
        return extra


class Predictor:
    """Turns rows into times with one profile, dtype and mode."""

    def __init__(self, profile: Profile, mode: str, amp: str | None = None,
                 channels_last: bool = False, compile: bool = False):
        if mode not in MODES:
            raise SpecError(f"mode must be inference or train. Received: {mode!r}")
        self.profile, self.mode, self.amp = profile, mode, amp
        self.notes: list[str] = []
        self.usage = Usage()      # what the prediction asks of the table, for its warnings
        self.dtype = amp or "fp32"
        self.dsize = DTYPES[self.dtype]
        self.table = profile.table(self.dtype, channels_last, self.notes)
        self.fp32 = profile.tables.get("fp32") or self.table
        o = profile.overhead
        self.o_fwd = o["train" if mode == "train" else "inference"]
        self.o_bwd = o["backward"]
        # a GPU runs a kernel while the host launches the next: the per-op
        # overhead overlaps the work (max), where a CPU adds it (+)
        self.overlap = profile.device == "cuda"
        self.elementwise_factor = 1.0
        if compile:
            c = profile.compile.get(mode)
            if isinstance(c, dict) and "elementwise_factor" in c:
                self.elementwise_factor = float(c["elementwise_factor"])
                self.notes.append(f"--compile: elementwise ops at {self.elementwise_factor:.2f}x "
                                  "their eager time (the profile's conv + batch norm + relu "
                                  "stack, compiled vs eager)")
            else:
                self.notes.append("--compile: the profile has no torch.compile measurement "
                                  "(calibrate without --quick); predicted as eager")

    # -- one primitive ------------------------------------------------------
    def _roof(self, parts, t_c, t_m, over):
        """max(compute, memory) + overhead (a CPU) or max of all three (a GPU)."""
        if self.overlap and over > max(t_c, t_m):
            parts.add(overhead=over)
        elif t_c >= t_m:
            parts.add(compute=t_c, overhead=0.0 if self.overlap else over)
        else:
            parts.add(memory=t_m, overhead=0.0 if self.overlap else over)

    def gemm_like(self, rate_fwd, rate_bwd, flops, bwd_flops, nbytes, fwd, bwd):
        """max(flops / rate, bytes / bandwidth) + overhead, forward and backward."""
        bw = self.profile.bandwidth(nbytes)
        t_mem = nbytes / bw
        # nothing calibrated: the copy bandwidth alone
        self._roof(fwd, flops / rate_fwd if rate_fwd else 0.0, t_mem, self.o_fwd)
        if bwd is not None:
            rate = rate_bwd or rate_fwd
            self._roof(bwd, bwd_flops / rate if rate else 0.0, 2 * t_mem if bwd_flops else 0.0,
                       self.o_bwd)

    def context_s(self, reads, writes):
        """What an op pays in a network beyond its calibrated time (a CPU): the
        calibration times each op in a loop, so the data it reads (input and
        weights) stays in the core's L2 when it fits there; in a network the
        ops between two calls of a layer pass other tensors through the L2, and
        the layer reads its input and weights and writes its output at the
        bandwidth of memory beyond the caches (the copy bandwidth at the largest
        working set calibrated). Nothing for reads larger than the L2 (streamed
        in the calibration too), nor on a GPU, nor without the profile's L2 size."""
        if self.overlap or not self.profile.l2_bytes or reads > self.profile.l2_bytes:
            return 0.0
        nbytes = reads + writes
        far = self.profile.bandwidth_curve[-1][1]
        return max(0.0, nbytes / far - nbytes / self.profile.bandwidth(nbytes))

    def op_time(self, name, elements, which, floor=None):
        curve = self.table.op_curve(name, which, self.notes)
        self.usage.op(name, len(curve or ()))
        if floor is None:
            floor = self.o_bwd if which == "backward" else self.o_fwd
        if curve is None:   # not even a copy: twice the bytes at the bandwidth
            nbytes = 2 * elements * self.dsize
            return nbytes / self.profile.bandwidth(nbytes) + floor
        return loglog_time(curve, elements, floor)

    def _context(self, reads, writes, fwd, bwd):
        """The network-context time (context_s) as memory time: once forward,
        twice backward (the gradients read and written, the saved input read)."""
        t = self.context_s(reads, writes)
        if t:
            fwd.add(memory=t)
            if bwd is not None:
                bwd.add(memory=2 * t)

    def work(self, c: Cost, batch: int):
        """A conv's or an fc's work at this batch: (FLOPs, weight, input and
        output elements, its rate lookup): ``rate("log_forward")`` is the
        profile's FLOP/s for its shape (``log_backward``; on a GPU profile
        ``log_forward_host`` and ``log_backward_host`` give the host's seconds)."""
        if c.primitive == "conv":
            dims = tuple(int(v) for v in c.conv)
            kh, kw, sh, sw, cin, cout, ho, wo, g = dims
            self.usage.convs[conv_class(kh, kw, sh, sw, cin, cout, g)[2]] += 1
            weights = kh * kw * (cin // g) * cout
            # the input's elements: from the output grid back through the stride
            inp = batch * cin * ((ho - 1) * sh + kh) * ((wo - 1) * sw + kw)
            return (conv_flops(*dims, batch), weights, inp, batch * cout * ho * wo,
                    lambda which: self.table.conv_rate(dims, batch, which))
        m, n, k = (int(v) for v in c.gemm)
        self.usage.linears += 1
        m *= batch
        return (2 * m * n * k, n * k, m * k, m * n,
                lambda which: self.table.linear_rate(m, n, k, which))

    def cost(self, c: Cost, batch: int, x_elements, needs_input_grad: bool, grad: bool,
             fwd: _Parts, bwd: _Parts | None):
        """Add one primitive's seconds to fwd (and bwd in train mode)."""
        train = self.mode == "train"
        if bwd is not None and not (grad and c.backward):
            bwd = None
        if c.primitive == "view" or (c.train_only and not train):
            fwd.add(overhead=self.o_fwd)
            return
        if c.primitive in ("conv", "linear"):
            flops, weights, inp, out, rate = self.work(c, batch)
            nbytes = (weights + inp + out) * self.dsize
            # an fc's input gradient is always counted (as calibrated: a GEMM's backward)
            bwd_flops = flops * (2 if needs_input_grad or c.primitive == "linear" else 1)
            self._context((inp + weights) * self.dsize, out * self.dsize, fwd, bwd)
            self.gemm_like(rate("log_forward"), rate("log_backward"),
                           flops, bwd_flops, nbytes, fwd, bwd)
            return
        elements = int(c.elements) * (1 if c.per_batch else batch)
        self._context(elements * self.dsize, elements * self.dsize, fwd, bwd)
        t = self.op_time(c.primitive, elements, "train" if train else "inference") * c.scale
        over = min(self.o_fwd, t)
        fwd.add(memory=(t - over) * self.elementwise_factor, overhead=over)
        if bwd is not None:
            tb = self.op_time(c.primitive, elements, "backward") * c.scale
            over = min(self.o_bwd, tb)
            bwd.add(memory=tb - over, overhead=over)

    # -- one row ----------------------------------------------------------
    def row_costs(self, row):
        """(kind or None, Cost, input elements per sample) for each op of a row.
        A kind without a cost model stops the prediction, by name."""
        try:
            return self._row_costs(row)
        except NoCostModel as e:
            raise SpecError(f"{row.name}: {e}: archcalc predict cannot predict its time "
                            "(give the kind a cost() beside its FLOPs rule)") from None

    def _row_costs(self, row):
        out = []
        if row.merge:
            y = row.output_shape
            name = {"concat": "cat", "add": "add", "sub": "add", "mul": "mul"}.get(row.merge, "copy")
            # torch.cat takes all its inputs at once; a sum or product of N runs
            # N - 1 binary ops ((a + b) + c ...), each over the output
            ops = 1 if row.merge == "concat" else max(len(row.merged) - 1, 1)
            out += [(None, Cost(name, elements=sym.prod(y)), sym.prod(y))] * ops
            x = y
            for op in row.post:
                yy = op.kind.output_shape(op.args, x)
                out += [(op.kind, c, sym.prod(x)) for c in op.kind.cost(op.args, x, yy)]
                x = yy
            return out
        x = row.input_shape
        for op in row.ops:
            y = op.kind.output_shape(op.args, x)
            out += [(op.kind, c, sym.prod(x)) for c in op.kind.cost(op.args, x, y)]
            x = y
        return out

    # -- a GPU: the host launches, the device runs --------------------------
    def _host_op(self, name, elements, which):
        """Host seconds to launch a table op (calibrated by size; the per-op
        overhead where the profile has no host time for it)."""
        floor = self.profile.host_overhead[which]
        while name and name not in self.table.ops:
            name = op_relatives().get(name)
        curve = self.table.ops[name].get(which + "_host") if name else None
        if not curve:
            return floor
        return interp(curve, max(elements, 1.0), log_y=True)

    def device_events(self, c: Cost, batch: int, needs_input_grad: bool, grad: bool):
        """One primitive on a GPU: ([forward events], [backward events]), each
        (host seconds, device seconds, bound): the host's launching and the
        kernels' time, which the timeline overlaps."""
        train = self.mode == "train"
        h = self.profile.host_overhead
        h_fwd = h["train" if train else "inference"]
        # autograd's recording: what a module call costs the host in train mode
        extra = max(0.0, h["train"] - h["inference"]) if train else 0.0
        back = train and grad and c.backward
        fwd, bwd = [], []
        if c.primitive == "view" or (c.train_only and not train):
            return [(h_fwd, 0.0, "overhead")], []
        casts = [int(t) for t in c.tensors if t] if self.amp and c.primitive in (
            "conv", "linear") else []
        for t in casts:   # autocast's copy of each weight in the compute dtype
            g = self._cast_device_s(t)
            fwd.append((self._host_cast("inference"), g, "memory"))
            if back:
                bwd.append((self._host_cast("backward"), g, "memory"))
        if c.primitive in ("conv", "linear"):
            flops, weights, inp, out, rate = self.work(c, batch)
            nbytes = (weights + inp + out) * self.dsize
            t_mem = nbytes / self.profile.bandwidth(nbytes)
            r = rate("log_forward")
            t_c = flops / r if r else 0.0
            fwd.append(((rate("log_forward_host") or h["inference"]) + extra, max(t_c, t_mem),
                        "compute" if t_c >= t_mem else "memory"))
            if back:
                bflops = flops * (2 if needs_input_grad else 1)
                rb = rate("log_backward") or r
                t_c = bflops / rb if rb else 0.0
                bwd.append((rate("log_backward_host") or h["backward"], max(t_c, 2 * t_mem),
                            "compute" if t_c >= 2 * t_mem else "memory"))
            return fwd, bwd
        elements = int(c.elements) * (1 if c.per_batch else batch)
        which = "train" if train else "inference"
        fwd.append((self._host_op(c.primitive, elements, which),
                    self.op_time(c.primitive, elements, which, floor=0.0) * c.scale, "memory"))
        if back:
            bwd.append((self._host_op(c.primitive, elements, "backward"),
                        self.op_time(c.primitive, elements, "backward", floor=0.0) * c.scale,
                        "memory"))
        return fwd, bwd

    def _host_cast(self, which):
        return self._host_op("copy", 1, which)

    def _cast_device_s(self, elements):
        copy = self.fp32.op_curve("copy", "inference", self.notes)
        if copy:
            return loglog_time(copy, elements)
        nbytes = elements * (4 + self.dsize)
        return nbytes / self.profile.bandwidth(nbytes)

    def _predict_split(self, report) -> Prediction:
        """A GPU: the host launches every op in order and runs ahead of the
        device, which runs each kernel once the host has launched it and the
        kernel before it has finished. Where the kernels are short the device
        waits on the host (overhead-bound: small batches, many small layers);
        where they are long the host's time hides under them."""
        batch = report.batch
        train = self.mode == "train"
        h = self.profile.host_overhead
        rows = []           # (row, forward events, backward events)
        tensors = []
        for row, container, ops in self.walk(report):
            fwd, bwd = [], []
            if container:   # the container module's call
                fwd.append((h["train" if train else "inference"], 0.0, "overhead"))
            for c, _x, needs_input_grad, grad in ops:
                f, b = self.device_events(c, batch, needs_input_grad, grad)
                fwd += f
                bwd += b
                tensors += [int(t) for t in c.tensors if t]
            if train and row.merge:
                # where the merge's inputs forked, autograd sums their gradients
                n = int(sym.prod(row.output_shape)) * batch
                bwd.append((0.0, self.op_time("add", n, "inference", floor=0.0), "memory"))
            rows.append((row, fwd, bwd))
        clock = _Timeline()
        other_parts = _Parts()
        if self.amp:   # the image, cast by the first layer before anything else
            image = int(sym.prod(report.model.input)) * batch
            other_parts.merge(clock.run([(self._host_cast("inference"),
                                          self._cast_device_s(image), "memory")]))
        forward = {id(r): clock.run(f) for r, f, _ in rows}
        loss = [(h["train"], 1e-6, "overhead")] * 4 + [(h["backward"], 1e-6, "overhead")] * 4 \
            if train else []
        other_parts.merge(clock.run(loss))
        backward = {id(r): clock.run(list(reversed(b))) for r, _, b in reversed(rows)} \
            if train else {}
        optimizer = _Parts()
        if train:
            curve = self.profile.optimizer_host_curve
            host = sum(interp(curve, max(t, 1.0), log_y=True) for t in tensors) if curve else 0.0
            dev = sum(loglog_time(self.profile.optimizer_gpu_curve, max(t, 1.0))
                      for t in tensors) if self.profile.optimizer_gpu_curve else \
                sum(self.profile.optimizer_s(t) for t in tensors)
            optimizer = clock.run([(host, dev, "memory")])
        tail = clock.finish()
        layers = [self._layer(row, batch, forward[id(row)], backward.get(id(row)))
                  for row, _, _ in rows]
        return self._prediction(report, layers, optimizer.total * 1e3,
                                (other_parts.total + tail) * 1e3)

    def walk(self, report):
        """Each row with its primitives: (row, whether a container module is
        called, [(Cost, input elements, needs its input's gradient, has a
        backward pass)]). Before the first weighted op nothing needs a
        gradient, and that op computes no input gradient."""
        seen_weighted = False
        for row in report.rows[1:]:
            costs = self.row_costs(row)
            ops = []
            for kind, c, x in costs:
                weighted = bool(kind is not None and kind.weighted)
                first = weighted and not seen_weighted
                ops.append((c, x, not first, seen_weighted or weighted or bool(c.tensors)))
                seen_weighted = seen_weighted or weighted
            yield row, len(costs) > 1 or bool(row.merge), ops

    @staticmethod
    def _layer(row, batch: int, fwd: _Parts, bwd: _Parts | None) -> LayerPrediction:
        both = _Parts().merge(fwd).merge(bwd)
        parts = {"compute": both.compute, "memory": both.memory, "overhead": both.overhead}
        return LayerPrediction(
            row.index, row.name, row.type, fwd.total * 1e3,
            (bwd.total if bwd is not None else 0.0) * 1e3, max(parts, key=parts.get),
            int(sym.to_json(row.flops)) * batch if not sym.is_symbolic(row.flops) else 0,
            both.compute * 1e3, both.memory * 1e3, both.overhead * 1e3)

    def _prediction(self, report, layers, optimizer_ms, other_ms) -> Prediction:
        forward = sum(layer.forward_ms for layer in layers)
        backward = sum(layer.backward_ms for layer in layers)
        step = forward + backward + optimizer_ms + other_ms
        bound_ms = {k: sum(getattr(layer, f"{k}_ms") for layer in layers)
                    for k in ("compute", "memory", "overhead")}
        return Prediction(report.model.name, report.batch, self.mode, self.dtype,
                          self.profile.device, forward, backward, optimizer_ms, other_ms, step,
                          report.batch / step * 1e3 if step else 0.0, bound_ms, layers,
                          list(self.notes),
                          warnings_for(self.profile, self.table, self.usage, self.mode))

    def predict(self, report) -> Prediction:
        self.usage = Usage()
        return (self._predict_split if self.profile.split else self._predict_host)(report)

    def _predict_host(self, report) -> Prediction:
        batch = report.batch
        train = self.mode == "train"
        layers = []
        tensors = []
        casts = 0
        for row, container, ops in self.walk(report):
            fwd, bwd = _Parts(), (_Parts() if train else None)
            if container:   # the container module's call
                fwd.add(overhead=self.o_fwd)
            for c, x, needs_input_grad, grad in ops:
                self.cost(c, batch, x, needs_input_grad, grad, fwd, bwd)
                tensors += [int(t) for t in c.tensors if t]
                if self.amp and c.primitive in ("conv", "linear"):
                    casts += sum(int(t) for t in c.tensors)
            if train and row.merge and bwd is not None:
                # where the merge's inputs forked, autograd sums their gradients
                t = self.op_time("add", int(sym.prod(row.output_shape)) * batch, "inference")
                bwd.add(memory=t)
            layers.append(self._layer(row, batch, fwd, bwd))
        optimizer = sum(self.profile.optimizer_s(t) for t in tensors) * 1e3 if train else 0.0
        other = 0.0
        if self.amp:   # autocast casts the weights once a step (and the image)
            image = int(sym.prod(report.model.input)) * batch
            copy = self.fp32.op_curve("copy", "inference", self.notes)
            if copy:
                other += (loglog_time(copy, casts) + loglog_time(copy, image)) * 1e3
        if train:   # the loss (a square and a mean) and its backward
            other += 4 * (self.o_fwd + self.o_bwd) * 1e3
        return self._prediction(report, layers, optimizer, other)


def predict(spec_or_model, profile: Profile, *, batches=(1,), mode: str = "inference",
            amp: str | None = None, channels_last: bool = False, compile: bool = False,
            variables: dict | None = None, input=None) -> list[Prediction]:
    """Predicted time per layer and per step at each batch."""
    predictor = Predictor(profile, mode, amp, channels_last, compile)
    out = []
    for batch in batches:
        report = analyze(spec_or_model, batch=batch, dtype=amp or "fp32",
                         variables=variables, input=input)
        if report.symbolic:
            raise SpecError(f"the spec has unbound variables ({', '.join(report.free_symbols)})"
                            ": a time needs numbers; bind them with --set NAME=VALUE",
                            file=report.model.file)
        out.append(predictor.predict(report))
    return out


def to_json(predictions: list[Prediction], profile: Profile, layers: bool = True) -> str:
    first = predictions[0]
    notes, warnings = [], []
    for p in predictions:
        notes += [n for n in p.notes if n not in notes]
        warnings += [w for w in p.warnings if w not in warnings]
    try:   # the schema keeps every time finite; never NaN or Infinity in JSON
        return json.dumps({
            "model": first.model, "mode": first.mode, "dtype": first.dtype,
            "device": first.device, "profile": profile.summary,
            "results": [p.as_json(layers) for p in predictions],
            "notes": notes, "warnings": warnings,
        }, indent=2, allow_nan=False)
    except ValueError:
        raise ProfileError("predicts a time that is not a finite number",
                           file=profile.source or "profile") from None


__all__ = ["Profile", "Prediction", "LayerPrediction", "load_profile", "predict",
           "PROFILE_FORMAT", "PROFILE_VERSION"]
