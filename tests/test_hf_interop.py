"""devicemap against the real libraries: accelerate's maps, transformers' loading and pipelines, Haystack's
serialization. Every model is a tiny one built and saved here; nothing is downloaded.
"""

from __future__ import annotations

from typing import Any

import pytest
from devicemap import ComponentDevice, Device, DeviceMap, DeviceType

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
accelerate = pytest.importorskip("accelerate")
accelerate_utils = pytest.importorskip("accelerate.utils")
tokenizers = pytest.importorskip("tokenizers")
haystack = pytest.importorskip("haystack")
hs_device = pytest.importorskip("haystack.utils.device")
yaml = pytest.importorskip("yaml")

VOCAB_SIZE = 64
PROMPT = "w3 w4 w5"


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    # `local_files_only=True` on every load is what keeps these tests off the hub; the variables
    # cover any code path that reads them at call time.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


def _tiny_tokenizer() -> Any:
    # Word-level tokens `w0`..`w63`, so any text of those words maps 1:1 onto the model's vocabulary.
    vocab = {f"w{i}": i for i in range(VOCAB_SIZE)}
    vocab["[UNK]"] = vocab.pop("w2")
    core = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="[UNK]"))
    core.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=core, unk_token="[UNK]", bos_token="w0", eos_token="w1", pad_token="w1"
    )


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    """A saved two-layer GPT-2 with its tokenizer, loadable offline."""
    config = transformers.GPT2Config(
        n_layer=2,
        n_embd=32,
        n_head=2,
        n_positions=32,
        vocab_size=VOCAB_SIZE,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
    )
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(config)
    path = tmp_path_factory.mktemp("tiny-gpt2")
    model.save_pretrained(path)
    _tiny_tokenizer().save_pretrained(path)
    return path


def _load(path, **kwargs: Any) -> Any:
    return transformers.AutoModelForCausalLM.from_pretrained(path, local_files_only=True, **kwargs)


def _logits(model, device: torch.device) -> torch.Tensor:
    ids = torch.tensor([[3, 4, 5, 6]], device=device)
    with torch.no_grad():
        return model(ids).logits


def _inferred_map(model) -> dict[str, Any]:
    """accelerate's own split of `model` over a CPU budget too small for it, with disk as overflow."""
    total = accelerate_utils.compute_module_sizes(model)[""]
    return accelerate.infer_auto_device_map(
        model,
        max_memory={"cpu": int(total * 0.7), "disk": 10 * total},
        no_split_module_classes=list(model._no_split_modules),
    )


# --- 1. accelerate's infer_auto_device_map ------------------------------------------------


def test_infer_auto_device_map_round_trip(tiny_dir):
    model = _load(tiny_dir)
    hf_map = _inferred_map(model)
    # The point of the budget: the map must really mix both kinds.
    assert set(hf_map.values()) == {"cpu", "disk"}

    dm = DeviceMap.from_hf(hf_map)
    assert list(dm.keys()) == list(hf_map)
    assert [str(device) for device in dm.values()] == list(hf_map.values())
    assert dm.to_dict() == dict(hf_map)
    assert list(dm.to_dict()) == list(hf_map)

    cd = ComponentDevice.from_multiple(dm)
    assert cd.has_multiple_devices
    assert cd.to_hf() == dict(hf_map)
    assert list(cd.to_hf()) == list(hf_map)

    first_usable = next(value for value in hf_map.values() if value != "disk")
    assert cd.first_device == ComponentDevice.from_str(first_usable)
    assert cd.first_device.to_torch() == torch.device(first_usable)

    # Same as Haystack's reading of the same map.
    hs_map = hs_device.DeviceMap.from_hf(hf_map)
    assert dm.to_dict() == hs_map.to_dict()
    assert cd.to_dict() == hs_device.ComponentDevice.from_multiple(hs_map).to_dict()


def test_infer_auto_device_map_disk_entries_first(tiny_dir):
    hf_map = _inferred_map(_load(tiny_dir))
    disk_first = {k: v for k, v in hf_map.items() if v == "disk"} | {
        k: v for k, v in hf_map.items() if v != "disk"
    }
    assert next(iter(disk_first.values())) == "disk"

    dm = DeviceMap.from_hf(disk_first)
    assert list(dm.keys()) == list(disk_first)
    assert dm.first_device == Device.disk()
    # Equality ignores order; `first_device` of the component skips the disk entries.
    assert dm == DeviceMap.from_hf(hf_map)
    assert ComponentDevice.from_multiple(dm).first_device == ComponentDevice.from_single(Device.cpu())


def test_infer_auto_device_map_loads_through_update_hf_kwargs(tiny_dir, tmp_path):
    reference = _load(tiny_dir)
    hf_map = _inferred_map(reference)
    cd = ComponentDevice.from_multiple(DeviceMap.from_hf(hf_map))

    kwargs = cd.update_hf_kwargs({}, overwrite=False)
    assert kwargs == {"device_map": dict(hf_map)}
    model = _load(tiny_dir, offload_folder=tmp_path / "offload", **kwargs)
    assert model.hf_device_map == dict(hf_map)

    # The split model computes what the whole one does, with inputs on the map's first device.
    device = ComponentDevice.from_multiple(DeviceMap.from_hf(model.hf_device_map)).first_device.to_torch()
    torch.testing.assert_close(_logits(model, device), _logits(reference, torch.device("cpu")))


# --- 2. a loaded model's hf_device_map ----------------------------------------------------


def _explicit_map(model, disk_prefix: str) -> dict[str, Any]:
    """One entry per leaf-level child of `transformer` plus `lm_head`, the `disk_prefix` one on disk."""
    names = [f"transformer.{name}" for name, _ in model.transformer.named_children()] + ["lm_head"]
    return {name: "disk" if name == disk_prefix else "cpu" for name in names}


@pytest.mark.parametrize("torch_values", [False, True], ids=["str", "torch.device"])
def test_hf_device_map_of_loaded_model(tiny_dir, tmp_path, torch_values):
    reference = _load(tiny_dir)
    requested: dict[str, Any] = _explicit_map(reference, "transformer.h")
    if torch_values:
        # "disk" has no torch.device form, so it stays a string, as in real mixed maps.
        requested = {k: v if v == "disk" else torch.device(v) for k, v in requested.items()}

    model = _load(tiny_dir, device_map=requested, offload_folder=tmp_path / "first")
    seen = model.hf_device_map
    assert list(seen) == list(requested)
    assert {type(value) for value in seen.values()} == ({str, torch.device} if torch_values else {str})

    dm = DeviceMap.from_hf(seen)
    assert list(dm.keys()) == list(seen)
    assert dm["transformer.h"] == Device.disk()
    assert all(dm[key] == Device.cpu() for key in seen if key != "transformer.h")
    assert dm.to_dict() == {k: str(v) for k, v in seen.items()}
    assert dm.to_dict() == hs_device.DeviceMap.from_hf(seen).to_dict()

    kwargs = ComponentDevice.from_multiple(dm).update_hf_kwargs({}, overwrite=False)
    reloaded = _load(tiny_dir, offload_folder=tmp_path / "second", **kwargs)
    assert {k: str(v) for k, v in reloaded.hf_device_map.items()} == dm.to_dict()
    assert DeviceMap.from_hf(reloaded.hf_device_map) == dm

    device = ComponentDevice.from_multiple(dm).first_device.to_torch()
    torch.testing.assert_close(_logits(reloaded, device), _logits(reference, torch.device("cpu")))


def test_hf_device_map_single_entry(tiny_dir):
    # transformers 5 sets `hf_device_map` only when it dispatches (several devices or disk), so a
    # whole-model-on-one-device map comes from accelerate's `dispatch_model`.
    model = accelerate.dispatch_model(_load(tiny_dir), device_map={"": "cpu"})
    assert model.hf_device_map == {"": "cpu"}

    dm = DeviceMap.from_hf(model.hf_device_map)
    assert dict(dm) == {"": Device.cpu()}
    cd = ComponentDevice.from_multiple(dm)
    assert cd.to_hf() == {"": "cpu"}
    assert cd.first_device == ComponentDevice.from_str("cpu")

    kwargs = cd.update_hf_kwargs({}, overwrite=False)
    assert kwargs == {"device_map": {"": "cpu"}}
    reloaded = _load(tiny_dir, **kwargs)
    assert {p.device for p in reloaded.parameters()} == {torch.device("cpu")}


def test_update_hf_kwargs_keeps_users_device_map(tiny_dir, tmp_path):
    reference = _load(tiny_dir)
    users = _explicit_map(reference, "transformer.ln_f")
    kwargs = {"device_map": users}
    ours = ComponentDevice.from_multiple(DeviceMap.from_hf(_explicit_map(reference, "transformer.h")))
    assert ours.update_hf_kwargs(kwargs, overwrite=False) is kwargs
    assert kwargs == {"device_map": users}
    model = _load(tiny_dir, offload_folder=tmp_path / "offload", **kwargs)
    assert DeviceMap.from_hf(model.hf_device_map) == DeviceMap.from_hf(users)


# --- 3. one device: pipelines and torch ------------------------------------------------------


def test_single_device_pipeline(tiny_dir):
    cd = ComponentDevice.from_str("cpu")
    kwargs = cd.update_hf_kwargs({}, overwrite=False)
    assert kwargs == {"device": "cpu"}

    pipe = transformers.pipeline(task="text-generation", model=str(tiny_dir), **kwargs)
    assert pipe.device == cd.to_torch()
    assert {p.device for p in pipe.model.parameters()} == {cd.to_torch()}

    result = pipe(PROMPT, max_new_tokens=3, do_sample=False)
    text = result[0]["generated_text"]
    assert text.startswith(PROMPT)
    assert len(text) > len(PROMPT)

    # Haystack hands the pipeline the same kwargs.
    hs_kwargs = hs_device.ComponentDevice.from_str("cpu").update_hf_kwargs({}, overwrite=False)
    assert hs_kwargs == kwargs


def test_to_torch_moves_a_model(tiny_dir):
    model = _load(tiny_dir)
    for cd in (
        ComponentDevice.from_str("cpu"),
        ComponentDevice.from_single(Device.cpu()),
        ComponentDevice.from_multiple(DeviceMap({"a": Device.disk(), "b": Device.cpu()})).first_device,
    ):
        device = cd.to_torch()
        assert isinstance(device, torch.device)
        model = model.to(device)
        assert {p.device for p in model.parameters()} == {device}
        assert _logits(model, device).device == device


# --- 4. Haystack serialization -----------------------------------------------------------------

HS_MAP = {"embed": "cpu", "layers.0": "cuda:0", "layers.1": "cuda:1", "norm": "disk", "head": "cpu"}


def _haystack_devices() -> list[Any]:
    return [
        hs_device.ComponentDevice.from_str("cpu"),
        hs_device.ComponentDevice.from_str("cuda:1"),
        hs_device.ComponentDevice.from_multiple(hs_device.DeviceMap.from_dict(HS_MAP)),
    ]


def _ours_from_strings(entry: dict[str, Any]) -> ComponentDevice:
    # Built without going through `from_dict`, so the comparison does not assume what it tests.
    if entry["type"] == "single":
        return ComponentDevice.from_single(Device.from_str(entry["device"]))
    return ComponentDevice.from_multiple(
        DeviceMap({k: Device.from_str(v) for k, v in entry["device_map"].items()})
    )


@haystack.component
class DeviceHolder:
    """Stores a device the way Haystack's components do."""

    def __init__(self, device: Any = None) -> None:
        self.device = hs_device.ComponentDevice.resolve_device(device)

    @haystack.component.output_types(device=str)
    def run(self, text: str) -> dict[str, str]:
        return {"device": f"{text}@{self.device}"}

    def to_dict(self) -> dict[str, Any]:
        return haystack.default_to_dict(self, device=self.device.to_dict())

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DeviceHolder:
        params = data["init_parameters"]
        params["device"] = hs_device.ComponentDevice.from_dict(params["device"])
        return haystack.default_from_dict(cls, data)


@pytest.mark.parametrize("hs_cd", _haystack_devices(), ids=["cpu", "cuda:1", "map"])
def test_haystack_pipeline_yaml_round_trip(hs_cd):
    pipeline = haystack.Pipeline()
    pipeline.add_component("holder", DeviceHolder(device=hs_cd))
    data = yaml.safe_load(pipeline.dumps())
    entry = data["components"]["holder"]["init_parameters"]["device"]

    ours = ComponentDevice.from_dict(entry)
    assert ours == _ours_from_strings(entry)
    assert ours.to_dict() == entry
    assert ours.has_multiple_devices == hs_cd.has_multiple_devices
    if ours.has_multiple_devices:
        # Haystack's YAML sorts keys, so the entry's own order is the one to keep.
        assert list(ours.to_dict()["device_map"]) == list(entry["device_map"])
        assert ours == _ours_from_strings({"type": "multiple", "device_map": HS_MAP})
        assert ours.to_hf() == hs_cd.to_hf()
    else:
        assert ours.to_torch_str() == hs_cd.to_torch_str()

    # Our serialized form, written into the YAML, loads back in Haystack as the original device.
    data["components"]["holder"]["init_parameters"]["device"] = ours.to_dict()
    # The holder lives in this test module, which Haystack's deserialization allowlist must name.
    loaded = haystack.Pipeline.loads(yaml.safe_dump(data), allowed_modules=[__name__])
    assert loaded.get_component("holder").device == hs_cd
    rebuilt = haystack.Pipeline.from_dict(data, allowed_modules=[__name__])
    assert rebuilt.get_component("holder").device == hs_cd


@pytest.mark.parametrize("hs_cd", _haystack_devices(), ids=["cpu", "cuda:1", "map"])
def test_haystack_sas_evaluator_round_trip(hs_cd, monkeypatch):
    sas = pytest.importorskip("haystack.components.evaluators.sas_evaluator")
    # Only `warm_up` uses sentence-transformers; construction and (de)serialization never touch it,
    # so the import guard is lifted to test a real component's `to_dict`/`from_dict` without it.
    monkeypatch.setattr(sas.sas_import, "check", lambda: None)

    evaluator = sas.SASEvaluator(model="local-model", device=hs_cd)
    data = evaluator.to_dict()
    entry = data["init_parameters"]["device"]
    ours = ComponentDevice.from_dict(entry)
    assert ours == _ours_from_strings(entry)
    assert ours.to_dict() == entry

    data["init_parameters"]["device"] = ours.to_dict()
    rebuilt = sas.SASEvaluator.from_dict(data)
    assert rebuilt._device == hs_cd
    assert rebuilt.to_dict() == evaluator.to_dict()


def test_accelerate_map_through_haystack_yaml(tiny_dir):
    hf_map = _inferred_map(_load(tiny_dir))
    ours = ComponentDevice.from_multiple(DeviceMap.from_hf(hf_map))
    assert DeviceType.DISK in {device.type for device in ours._multiple_devices.values()}
    data = {"type": f"{__name__}.DeviceHolder", "init_parameters": {"device": ours.to_dict()}}
    holder = DeviceHolder.from_dict(yaml.safe_load(yaml.safe_dump(data)))
    assert holder.device.to_hf() == dict(hf_map)
    assert holder.device.first_device.to_torch_str() == ours.first_device.to_torch_str()
    assert ComponentDevice.from_dict(holder.to_dict()["init_parameters"]["device"]) == ours
