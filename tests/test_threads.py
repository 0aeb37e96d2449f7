"""Maps shared between threads behave as a dict does under the GIL: every operation succeeds or
raises what a dict would raise, no write is lost, nothing panics. The GIL is made to switch as
often as CPython allows, so threads interleave inside every operation that lets them."""

from __future__ import annotations

import random
import sys
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from devicemap import ComponentDevice, Device, DeviceMap

# Bounded time per stress phase: long enough for thousands of interleavings, short for CI.
STRESS_SECONDS = 1.5


@pytest.fixture(autouse=True)
def fast_switching() -> Iterator[None]:
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        yield
    finally:
        sys.setswitchinterval(old)


def run_threads(targets: list[Callable[[], None]]) -> None:
    """Runs each target in its own thread and re-raises the first exception (BaseException too:
    a pyo3 PanicException is one)."""
    errors: list[BaseException] = []

    def wrap(target: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                target()
            except BaseException as exc:
                errors.append(exc)

        return run

    threads = [threading.Thread(target=wrap(t)) for t in targets]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
        assert not t.is_alive(), "a thread hung"
    if errors:
        raise errors[0]


def test_readers_never_make_writers_fail() -> None:
    """The reported failure: while readers call get/iterate/convert/fingerprint, every write
    through every path succeeded ('Already borrowed' before)."""
    dm = DeviceMap({f"seed.{i}": Device.cpu() for i in range(2000)})
    stop = threading.Event()
    writes_per_writer = 3000

    def reader() -> None:
        while not stop.is_set():
            assert dm.get("missing") is None
            for _name, device in dm:
                assert isinstance(device, Device)
            dm.to_dict()
            dm.fingerprint()
            assert "missing" not in dm
            ComponentDevice.from_multiple(dm).to_hf()

    def writer(n: int) -> Callable[[], None]:
        def run() -> None:
            for i in range(writes_per_writer):
                key = f"w{n}.{i}"
                match i % 4:
                    case 0:
                        dm[key] = Device.gpu(n)
                    case 1:
                        dm.mapping[key] = Device.gpu(n)
                    case 2:
                        dm.update({key: Device.gpu(n)})
                    case _:
                        assert dm.mapping.setdefault(key, Device.gpu(n)) == Device.gpu(n)

        return run

    readers = [reader for _ in range(4)]
    writers = [writer(n) for n in range(4)]
    # Readers run until the writers are done; exceptions from either side fail the test.
    errors: list[BaseException] = []

    def writers_then_stop() -> None:
        try:
            run_threads(writers)
        except BaseException as exc:
            errors.append(exc)
        finally:
            stop.set()

    done = threading.Thread(target=writers_then_stop)
    done.start()
    run_threads(readers)
    done.join()
    if errors:
        raise errors[0]
    assert len(dm) == 2000 + 4 * writes_per_writer
    for n in range(4):
        for i in range(writes_per_writer):
            assert dm[f"w{n}.{i}"] == Device.gpu(n)


def test_eight_threads_read_write_delete_convert_and_fingerprint() -> None:
    """Each writer owns its keys and a plain-dict model of them; at the end the map is exactly
    the union of the models. Readers check that every view they get is self-consistent."""
    shared = DeviceMap({f"base.{i}": Device.gpu(i % 8) for i in range(5000)})
    deadline = time.monotonic() + STRESS_SECONDS
    models: list[dict[str, Device]] = [{} for _ in range(4)]

    def writer(n: int) -> Callable[[], None]:
        rng = random.Random(n)
        model = models[n]

        def run() -> None:
            while time.monotonic() < deadline:
                key = f"t{n}.{rng.randrange(400)}"
                op = rng.randrange(6)
                if op <= 1:
                    device = Device.gpu(rng.randrange(8))
                    shared[key] = device
                    model[key] = device
                elif op == 2:
                    batch = {f"t{n}.{rng.randrange(400)}": Device.cpu() for _ in range(5)}
                    shared.update(batch)
                    model.update(batch)
                elif op == 3:
                    assert shared.pop(key, None) == model.pop(key, None)
                elif op == 4:
                    if key in model:
                        del shared[key]
                        del model[key]
                    else:
                        with pytest.raises(KeyError):
                            del shared[key]
                else:
                    assert shared.get(key) == model.get(key)

        return run

    def reader(n: int) -> Callable[[], None]:
        def run() -> None:
            while time.monotonic() < deadline:
                snapshot = shared.copy()
                as_dict = snapshot.to_dict()
                assert len(as_dict) == len(snapshot)
                assert DeviceMap.from_dict(as_dict) == snapshot
                assert DeviceMap.from_dict(as_dict).fingerprint() == snapshot.fingerprint()
                keys = [k for k, _ in snapshot]
                assert len(keys) == len(set(keys)) == len(snapshot)
                assert all(shared.get(f"base.{i}") == Device.gpu(i % 8) for i in range(0, 5000, 997))
                shared.fingerprint()
                if n % 2:
                    list(shared.mapping)
                    list(shared.items())

        return run

    run_threads([writer(n) for n in range(4)] + [reader(n) for n in range(4)])
    expected = {f"base.{i}": Device.gpu(i % 8) for i in range(5000)}
    for model in models:
        expected.update(model)
    assert dict(shared.mapping) == expected
    # The fingerprint kept up to date through every change equals one computed afresh.
    assert shared.fingerprint() == DeviceMap(expected).fingerprint()


def test_popitem_and_clear_race_without_losing_or_duplicating_entries() -> None:
    """popitem() takes each entry exactly once across threads, as dict.popitem does."""
    n = 20_000
    dm = DeviceMap({f"k.{i}": Device.cpu() for i in range(n)})
    taken: list[list[str]] = [[] for _ in range(4)]

    def popper(t: int) -> Callable[[], None]:
        def run() -> None:
            while True:
                try:
                    key, _ = dm.mapping.popitem()
                except KeyError:
                    return
                taken[t].append(key)

        return run

    run_threads([popper(t) for t in range(4)])
    everything = [k for part in taken for k in part]
    assert len(everything) == n
    assert set(everything) == {f"k.{i}" for i in range(n)}
    assert len(dm) == 0


def test_one_iterator_shared_by_threads_yields_each_entry_once() -> None:
    dm = DeviceMap({f"k.{i}": Device.cpu() for i in range(20_000)})
    iterator = iter(dm.mapping)
    seen: list[list[str]] = [[] for _ in range(4)]

    def consume(t: int) -> Callable[[], None]:
        return lambda: seen[t].extend(iterator)

    run_threads([consume(t) for t in range(4)])
    everything = [k for part in seen for k in part]
    assert sorted(everything) == sorted(dm.keys())


def test_a_key_whose_comparison_switches_threads_does_not_deadlock() -> None:
    """Conversions call into Python (a str subclass's __hash__/__eq__) with no lock held."""

    class SlowKey(str):
        def __hash__(self) -> int:
            time.sleep(0)  # lets other threads run mid-conversion
            return str.__hash__(self)

    dm = DeviceMap()

    def convert(n: int) -> Callable[[], None]:
        def run() -> None:
            for i in range(300):
                dm.update({SlowKey(f"s{n}.{i}"): Device.cpu()})
                dm.mapping = dict(dm.mapping) if i % 50 == 0 else dm.mapping

        return run

    run_threads([convert(n) for n in range(4)])
    assert all(isinstance(k, str) for k in dm.mapping)
