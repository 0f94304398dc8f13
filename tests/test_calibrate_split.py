"""calibrate's Clock.split (CUDA: the host's launching and the device's kernels
apart) on a CPU, with torch.cuda's events, sleep and synchronize replaced by a
fake device whose kernels run for a set time after the host launches them: the
split must give back the host's and the device's time per call, also when the
device's queue is longer than the host's launching and when the first sleep is
too short. (The real thing runs on a GPU only: benchmarks/gpu_predict.sh.)"""
import time

import pytest

torch = pytest.importorskip("torch")
from archcalc.torch import calibrate  # noqa: E402


class FakeDevice:
    """A device that runs each launched kernel for `kernel_s` after the kernel
    before it and after its launch; _sleep(cycles) occupies it for cycles /
    `hz` seconds. Time is the host's perf_counter."""

    def __init__(self, kernel_s, hz=1e9):
        self.kernel_s, self.hz = kernel_s, hz
        self.busy_until = 0.0
        self.sleeps = []

    def launch(self, seconds):
        now = time.perf_counter()
        self.busy_until = max(self.busy_until, now) + seconds
        return self.busy_until

    def sleep(self, cycles):
        self.sleeps.append(cycles)
        self.launch(cycles / self.hz)

    def synchronize(self):
        delay = self.busy_until - time.perf_counter()
        if delay > 0:
            time.sleep(delay)

    def event_class(self):
        device = self

        class Event:
            def __init__(self, enable_timing=False):
                self.at = None

            def record(self):
                self.at = device.launch(0.0)

            def query(self):
                return time.perf_counter() >= self.at

            def elapsed_time(self, other):
                return (other.at - self.at) * 1e3
        return Event


@pytest.fixture
def fake(monkeypatch):
    def make(kernel_s, hz=1e9):
        dev = FakeDevice(kernel_s, hz)
        monkeypatch.setattr(torch.cuda, "synchronize", dev.synchronize)
        monkeypatch.setattr(torch.cuda, "_sleep", dev.sleep, raising=False)
        monkeypatch.setattr(torch.cuda, "Event", dev.event_class())
        monkeypatch.setattr(calibrate.Clock, "_cycles_per_s", None)
        return dev
    return make


def spin(seconds):
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


@pytest.mark.parametrize("host_s, kernel_s", [(200e-6, 50e-6), (50e-6, 400e-6),
                                              (100e-6, 100e-6)])
def test_split_gives_host_and_device_time(fake, host_s, kernel_s):
    dev = fake(kernel_s)

    def op():          # the host spends host_s launching, the device kernel_s running
        spin(host_s)
        dev.launch(kernel_s)

    clock = calibrate.Clock("cuda", reps=5)
    host, device = clock.split(op)
    assert host == pytest.approx(host_s, rel=0.25, abs=20e-6)
    # the kernels back to back: the host's time hidden under the sleep
    assert device == pytest.approx(kernel_s, rel=0.25, abs=20e-6)
    assert dev.sleeps and all(c > 0 for c in dev.sleeps)


def test_split_with_setup_times_the_call_alone(fake):
    dev = fake(0.0)
    state = {"setups": 0}

    def setup():       # a forward before every backward: not in the split's times
        spin(2e-3)
        dev.launch(2e-3)
        state["setups"] += 1

    def backward():
        spin(100e-6)
        dev.launch(300e-6)

    host, device = calibrate.Clock("cuda", reps=3).split(backward, setup=setup)
    assert host == pytest.approx(100e-6, rel=0.3, abs=30e-6)
    assert device == pytest.approx(300e-6, rel=0.3, abs=30e-6)
    assert state["setups"] >= 4      # once for the first call, once per repetition


def test_split_lengthens_a_sleep_that_ended_too_soon(fake):
    """A device clock 100x slower than measured: the first sleep ends while the
    host still launches; the split sleeps longer and the device time stays the
    kernels' own."""
    dev = fake(100e-6)
    calibrate.Clock._cycles_per_s = 1e7     # the sleep's cycles/s, as if measured

    def op():
        spin(300e-6)
        dev.launch(100e-6)

    dev.hz = 1e7 * 50   # the fake device spins 50x shorter than the clock believes
    host, device = calibrate.Clock("cuda", reps=3).split(op)
    assert host == pytest.approx(300e-6, rel=0.3, abs=30e-6)
    assert len(set(dev.sleeps)) > 1      # a longer sleep was asked for
    assert device == pytest.approx(100e-6, rel=0.3, abs=30e-6)


def test_split_into_writes_the_keys(fake):
    dev = fake(10e-6)
    out = {}
    calibrate._split_into(out, "forward", calibrate.Clock("cuda", reps=3),
                          lambda: dev.launch(10e-6))
    assert set(out) == {"forward_host_s", "forward_gpu_s"}
    assert calibrate.Clock("cpu").split(lambda: None) is None
