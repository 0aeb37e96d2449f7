"""A checkpoint's sizes in the names of the model `from_pretrained` builds.

transformers decides renames, fused experts, ties and no-split classes per model class, with a
model instance. So where torch and transformers are installed, the class that `config.json`
names (or `model_class=`) is built on the meta device (no weights), each checkpoint key is
renamed by transformers' own renamer exactly as its loader calls it, and the core
(`_core._loaded_sizes`) sums the checkpoint's sizes per model tensor in the model's order.
torch and transformers are imported here only, and only when a checkpoint is planned.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any, NamedTuple

from devicemap import _core


class Loaded(NamedTuple):
    """What planning takes from a checkpoint: sizes, no-split module names (`None`: the
    default numbered blocks), tied groups, and, when planned in the checkpoint's own names,
    why (a sentence for the report)."""

    sizes: Any
    no_split: list[str] | None
    tied: list[list[str]]
    note: str | None


class _Unavailable(Exception):
    """Why the loader's model cannot be built here."""


#: Whether the checkpoint reader read `config.json`, and its text (`None`: there is none).
ConfigRead = tuple[bool, str | None]


def _config_dict(source: Any, token: str | None, read: ConfigRead = (False, None)) -> dict[str, Any] | None:
    """The `config.json` of a checkpoint path, list of files or Hub repository, as a dict;
    `read`: the text the checkpoint reader read already, taken instead of reading it again."""
    if isinstance(source, _core._HubCheckpoint):
        # Read at the commit its headers were read at: the branch is resolved once a plan.
        try:
            return dict(json.loads(source.config_json()))
        except ValueError as error:
            raise _Unavailable(str(error)) from None
    from devicemap._plan import _config_beside, _is_hub

    first = source[0] if isinstance(source, list | tuple) and source else source
    if read[0]:
        text = read[1]
    elif not isinstance(first, str | os.PathLike):
        return None
    elif _is_hub(first):
        text = _core._hub_config(first, token)
    else:
        candidate = _config_beside(first)
        text = None if candidate is None else candidate.read_text(encoding="utf-8")
    # The checkpoint reader has read this file already and refused it if it is not JSON.
    config = None if text is None else json.loads(text)
    return config if isinstance(config, dict) else None


def _model_class(transformers: Any, config: dict[str, Any] | None, model_class: Any) -> Any:
    if model_class is not None and not isinstance(model_class, str):
        return model_class
    name = model_class
    if name is None:
        architectures = (config or {}).get("architectures") or []
        # A list whose first item is a class name; anything else (`"architectures": 5` was a
        # TypeError, "'int' object is not subscriptable") names no class.
        if not isinstance(architectures, list) or not architectures or not isinstance(architectures[0], str):
            raise _Unavailable("config.json names no model class (`architectures`); pass model_class=")
        name = architectures[0]
    cls = getattr(transformers, name, None)
    if cls is None or not isinstance(cls, type):
        if model_class is not None:
            raise ValueError(
                f"model_class {name!r} is not a model class of transformers {transformers.__version__}"
            )
        raise _Unavailable(f"transformers {transformers.__version__} has no model class {name!r}")
    return cls


#: The mode class of `_skipping_init`, made on first use (it subclasses a torch class).
_SKIP_INIT: Any = None

#: `torch.nn.init` functions that hand themselves to torch function modes (the others only
#: call tensor methods, which reach the meta device's mode as usual).
_INIT_FUNCTIONS = ("uniform_", "normal_", "trunc_normal_", "constant_", "kaiming_uniform_", "kaiming_normal_")


def _skipping_init(torch: Any) -> Any:
    """A torch function mode under which `torch.nn.init`'s functions return a meta tensor as it
    is. Every `nn.Linear` and `nn.Embedding` initialises its weights while it is constructed;
    on the meta device that writes nothing but costs a third of building a model (Llama-3-70B:
    58 ms built, 37 ms with this). transformers' `no_init_weights` skips the same work by
    patching `torch.nn.init` for the whole process, which would also skip the initialisation of
    a model another thread builds meanwhile; a torch function mode is the calling thread's
    own, as the `torch.device("meta")` around it is. Tensors on a real device are initialised."""
    global _SKIP_INIT
    if _SKIP_INIT is None:
        init = torch.nn.init
        skipped = {id(getattr(init, name)) for name in _INIT_FUNCTIONS if hasattr(init, name)}

        class SkipInit(torch.overrides.TorchFunctionMode):  # type: ignore[misc]
            def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
                kwargs = kwargs or {}
                if id(func) in skipped:
                    tensor = args[0] if args else kwargs.get("tensor")
                    if isinstance(tensor, torch.Tensor) and tensor.is_meta:
                        return tensor
                return func(*args, **kwargs)

        _SKIP_INIT = SkipInit
    return _SKIP_INIT()


def _build(source: Any, model_class: Any, dtype: Any, token: str | None, read: ConfigRead) -> Any:
    """The model `from_pretrained` would build, on the meta device."""
    config_dict = _config_dict(source, token, read)
    if config_dict is None and model_class is None:
        raise _Unavailable("no config.json beside the checkpoint, and no model_class=")
    try:
        import torch
        import transformers
    except ImportError as error:
        raise _Unavailable(f"{error.name or 'torch or transformers'} is not installed") from None
    cls = _model_class(transformers, config_dict, model_class)
    try:
        if config_dict is not None:
            from transformers.models.auto.configuration_auto import CONFIG_MAPPING

            model_type = str(config_dict.get("model_type"))
            known = model_type in CONFIG_MAPPING
            config_class: Any = cls.config_class
            if known:
                config_class = CONFIG_MAPPING[model_type]
            config = config_class.from_dict(config_dict)
        else:
            config = cls.config_class()
        if dtype is not None and isinstance(dtype, torch.dtype):
            config.dtype = dtype
        with torch.device("meta"), _skipping_init(torch):
            return cls(config)
    except Exception as error:  # any failure: plan in the checkpoint's names, saying why
        raise _Unavailable(f"{cls.__name__} could not be built on the meta device ({error})") from None


#: A base model prefix the core settles as transformers does (it uses the prefix in a regex).
_PLAIN = re.compile(r"[A-Za-z0-9_]*")


#: An escape (`\.`, `\d`) or a word (`w1`, `experts`) in a pattern: a digit inside a word
#: only matches inside a component with a letter, never a numbered one.
_WORD_OR_ESCAPE = re.compile(r"\\.|[A-Za-z_][A-Za-z0-9_]*")


def _names_a_number(pattern: str) -> bool:
    """Whether a renaming pattern may tell numbered components apart by their value or length
    (`layers\\.1\\.`, `[0-9]`, `\\d\\.`): a digit outside a word (Mixtral's `w1` is inside one),
    or a `\\d` not repeated by `+` or `*`."""
    bounded = re.search(r"\\d(?![+*])", pattern) is not None
    return bounded or re.search("[0-9]", _WORD_OR_ESCAPE.sub("", pattern)) is not None


def _renamed(
    model: Any,
    keys: Any,
    key_mapping: dict[str, str] | None,
    direct: bool = False,
    state: dict[str, Any] | None = None,
    kept: bool = False,
) -> tuple[Any, list[list[str]]]:
    """Each checkpoint key as the loader renames it (`convert_and_load_state_dict_in_model`:
    transformers' `rename_source_key` with the model's renamings and converters), and the
    groups of model names one converter makes from the same tensors.

    Keys that differ only in their numbers (every expert of every layer) rename alike: the
    renamings and converters run once per such template, with stand-ins for the numbers, and
    the core puts the numbers back and settles the base model prefix per key. Each template's
    first key is renamed directly too and must agree; when one does not, when a pattern names
    a number (`layers\\.1\\.`), or with `direct=True`, every key is renamed by transformers.
    `kept`: the fast path's names stay in the core (`_core._RenamedKeys`, for `_loaded_sizes`)."""
    from transformers.conversion_mapping import get_model_conversion_mapping
    from transformers.core_model_loading import WeightConverter, WeightRenaming, rename_source_key

    mapping = get_model_conversion_mapping(model, key_mapping, None)
    renamings = [entry for entry in mapping if isinstance(entry, WeightRenaming)]
    converters = [entry for entry in mapping if isinstance(entry, WeightConverter)]
    by_pattern = {pattern: converter for converter in converters for pattern in converter.source_patterns}
    prefix = model.base_model_prefix
    state = model.state_dict() if state is None else state
    numbered = any(_names_a_number(p) for entry in mapping for p in entry.source_patterns)
    if not (direct or numbered) and (prefix is None or _PLAIN.fullmatch(prefix)):
        templates = {}
        for template, first in _core._name_templates(keys):
            new, pattern = rename_source_key(template, renamings, converters)
            targets = list(by_pattern[pattern].target_patterns) if pattern is not None else []
            templates[template] = (new, pattern, targets, *rename_source_key(first, renamings, converters))
        fast = _core._renamed_keys(keys, templates, prefix, list(state), kept)
        if fast is not None:
            return fast
    renamed: list[str] = []
    shared: dict[str, list[str]] = {}
    for key in keys if isinstance(keys, list) else keys.names():
        new, pattern = rename_source_key(key, renamings, converters, prefix, state)
        if new not in state and key in state:
            new, pattern = rename_source_key(key, [], [], base_model_prefix=prefix, meta_state_dict=state)
        if pattern is not None and new in state and new not in shared:
            targets = by_pattern[pattern].target_patterns
            if len(targets) > 1:
                shared[new] = [new.replace(targets[0], target) for target in targets]
        renamed.append(new)
    return renamed, list(shared.values())


def _ties(model: Any, found: list[list[str]]) -> list[list[str]]:
    """The model's tied groups as transformers ties them (`all_tied_weights_keys`, target ->
    source), each source first; else the tensors the meta model shares."""
    tied = getattr(model, "all_tied_weights_keys", None)
    if not tied:
        return found
    groups: dict[str, list[str]] = {}
    for target, source in tied.items():
        groups.setdefault(source, [source]).append(target)
    return list(groups.values())


def check_arguments(model_class: Any, key_mapping: Any) -> None:
    """Refuses a `model_class` that is neither a class nor a name, and a `key_mapping` that is
    not a dict (before anything is read)."""
    if key_mapping is not None and not isinstance(key_mapping, dict):
        raise TypeError(
            "key_mapping must be a dict of regex patterns to replacements, as from_pretrained takes it, "
            f"got {type(key_mapping).__name__}"
        )
    if model_class is not None and not isinstance(model_class, str | type):
        raise TypeError(
            f"model_class must be a transformers model class or its name, got {type(model_class).__name__} "
            f"{model_class!r:.60}"
        )


def _joined(sizes: Any, config_ties: list[list[str]] | None) -> tuple[Any, list[list[str]]]:
    """`(sizes, config_ties)`, waiting for them when they are still being read
    (`_core._SizesReading`)."""
    if isinstance(sizes, _core._SizesReading):
        return sizes.join()
    return sizes, config_ties or []


def loaded(
    source: Any,
    sizes: Any,
    config_ties: list[list[str]] | None,
    dtype: Any = None,
    model_class: Any = None,
    key_mapping: dict[str, str] | None = None,
    token: str | None = None,
) -> Loaded:
    """`sizes` (a checkpoint's, `_core._CheckpointSizes`) in the names of the model
    `from_pretrained` builds, with its no-split modules and ties; when that model cannot be
    built here, the checkpoint's own names and `config_ties`, and why. `sizes` may still be
    being read (`_core._checkpoint_sizes_started`, its ties with it): the model is built
    meanwhile, and a reading error is raised before any error of the build."""
    check_arguments(model_class, key_mapping)
    # The reader read config.json for the ties: the build takes that text (`_config_dict`).
    read: ConfigRead = (False, None)
    if isinstance(sizes, _core._SizesReading | _core._CheckpointSizes):
        read = sizes.config_read()
    try:
        model = _build(source, model_class, dtype, token, read)
    except _Unavailable as why:
        sizes, config_ties = _joined(sizes, config_ties)
        return Loaded(sizes, None, config_ties, _core._checkpoint_names_note(str(why)))
    except BaseException:
        _joined(sizes, config_ties)
        raise
    sizes, config_ties = _joined(sizes, config_ties)
    from devicemap._plan import _no_split_classes

    # The tensors themselves (keep_vars): state_dict's own detached copies cost a tensor each.
    # The no-split module names come from the same walk of the model. Non-persistent buffers
    # are in too, sized as the model holds them, as the stock path counts them: no checkpoint
    # stores them, but the loader places their modules (a rotary embedding holds only
    # `inv_freq`), so the map must name them. A module that makes its own state dict leaves
    # `state_dict` to say, without them.
    state, no_split = _core._state_tensors(model, _no_split_classes(model), transient=True)
    if state is None:
        state = model.state_dict(keep_vars=True)
    renamed, shared = _renamed(model, sizes, key_mapping, state=state, kept=True)
    load_dtype = dtype if dtype is not None else getattr(model.config, "dtype", None)
    try:
        model_sizes, identity = _core._loaded_sizes(sizes, renamed, state, shared, load_dtype)
    except ValueError:  # a config dtype that is no load dtype: the meta model's own sizes
        model_sizes, identity = _core._loaded_sizes(sizes, renamed, state, shared, dtype)
    return Loaded(model_sizes, no_split, _ties(model, identity), None)
