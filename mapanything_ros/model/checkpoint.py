"""Find and load MapAnything checkpoints (``config.json`` + ``model.safetensors``), offline and strictly.

A checkpoint is what ``huggingface_hub``'s ``PyTorchModelHubMixin.save_pretrained`` writes for upstream
MapAnything: the constructor kwargs as ``config.json`` and the weights as ``model.safetensors`` written by
``safetensors.torch.save_model``, which keeps one name per group of aliased parameters (the alphabetically
first) and records every dropped name in the header metadata (dropped name -> kept name).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import torch

from .network import MapAnything
from .runtime import select_device

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
CONFIG_KEYS = ("encoder_config", "geometric_input_config", "info_sharing_config", "pred_head_config")
HOW_TO_GET = (
    "To get the weights, on a machine with network access run `hf download facebook/map-anything` "
    "(older huggingface_hub: `huggingface-cli download facebook/map-anything`; or facebook/map-anything-apache) "
    "and copy its Hugging Face cache (e.g. ~/.cache/huggingface/hub) here, "
    "pointing HF_HUB_CACHE or HF_HOME at it, or pass the directory holding config.json and model.safetensors."
)
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_LIST_LIMIT = 10


class CheckpointNotFoundError(FileNotFoundError):
    """No checkpoint was found; the message lists every place looked at."""


class CheckpointError(ValueError):
    """A checkpoint file exists but cannot be used (bad config, corrupt or mismatched weights)."""


class StateDictMismatchError(CheckpointError):
    """The weights file does not match the network: keys missing, unexpected or of the wrong shape."""

    def __init__(self, path, missing, unexpected, mismatched):
        self.missing = sorted(missing)
        self.unexpected = sorted(unexpected)
        self.mismatched = dict(sorted(mismatched.items()))
        parts = [f"{path}: weights do not match the MapAnything network built from its config.json"]
        parts += _listing("missing key", self.missing)
        parts += _listing("unexpected key", self.unexpected)
        shapes = [f"{k}: file {tuple(f)} vs network {tuple(n)}" for k, (f, n) in self.mismatched.items()]
        parts += _listing("shape mismatch", shapes)
        super().__init__("\n".join(parts))


def _listing(what, items):
    if not items:
        return []
    lines = [f"{len(items)} {what}{'s' if len(items) > 1 else ''}:"]
    lines += [f"  {item}" for item in items[:_LIST_LIMIT]]
    if len(items) > _LIST_LIMIT:
        lines.append(f"  ... and {len(items) - _LIST_LIMIT} more")
    return lines


def read_config(path) -> dict:
    """Parse a MapAnything ``config.json`` (``Infinity``/``-Infinity``/``NaN`` allowed) and check its layout."""
    path = Path(path)
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise CheckpointError(f"{path}: cannot read config ({err.strerror or err})") from err
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{path}: not valid JSON ({err})") from err
    if not isinstance(config, dict):
        raise CheckpointError(f"{path}: expected a JSON object, got {type(config).__name__}")
    absent = [key for key in CONFIG_KEYS if not isinstance(config.get(key), dict)]
    if absent:
        raise CheckpointError(
            f"{path}: not a MapAnything config (missing or non-object: {', '.join(absent)}); "
            f"expected the kwargs of upstream MapAnything with keys {', '.join(CONFIG_KEYS)}"
        )
    return config


def hub_cache_dir(cache_dir=None) -> Path:
    """Hugging Face hub cache directory: ``cache_dir``, else HF_HUB_CACHE, HUGGINGFACE_HUB_CACHE, HF_HOME/hub,
    XDG_CACHE_HOME/huggingface/hub, ~/.cache/huggingface/hub (read from the environment at call time)."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(var):
            return Path(os.path.expandvars(os.environ[var])).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "huggingface"
    )
    return Path(os.path.expandvars(home)).expanduser() / "hub"


def resolve_checkpoint(path_or_repo_id, *, cache_dir=None, revision=None) -> tuple[Path, Path]:
    """Return ``(config_path, weights_path)`` without any network access.

    Looked at in order: (a) a local directory holding ``config.json`` and ``model.safetensors``, or a
    ``.safetensors`` file with ``config.json`` beside it; (b) a Hugging Face repo id (``owner/name``) in the
    local hub cache (see :func:`hub_cache_dir`) at ``revision`` (default ``main``; with no ``refs/main``, the
    only cached snapshot). Only the file system is read, so offline mode needs no setting.
    Raises :class:`CheckpointNotFoundError` listing every place looked at, or :class:`CheckpointError` for an
    existing path that is not a checkpoint.
    """
    text = os.fspath(path_or_repo_id)
    local = Path(text).expanduser()
    if local.exists():
        return _resolve_local(local)
    looked = [f"{local.absolute()} (no such file or directory)"]
    if _REPO_ID.match(text):
        found = _resolve_cached(text, hub_cache_dir(cache_dir), revision, looked)
        if found is not None:
            return found
    else:
        looked.append(f"'{text}' is not a Hugging Face repo id (owner/name), so no cache was searched")
    raise CheckpointNotFoundError(
        f"MapAnything checkpoint '{text}' not found. Looked at:\n"
        + "\n".join(f"  - {place}" for place in looked)
        + f"\n{HOW_TO_GET}"
    )


def _resolve_local(path: Path) -> tuple[Path, Path]:
    if path.is_dir():
        config, weights = path / CONFIG_NAME, path / WEIGHTS_NAME
    elif path.suffix == ".safetensors":
        config, weights = path.with_name(CONFIG_NAME), path
    else:
        raise CheckpointError(f"{path}: expected a checkpoint directory or a .safetensors file")
    absent = [p.name for p in (config, weights) if not p.is_file()]
    if absent:
        raise CheckpointError(f"{path}: checkpoint lacks {' and '.join(absent)} (looked in {config.parent})")
    return config, weights


def _resolve_cached(repo_id, cache, revision, looked):
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    if not repo.is_dir():
        looked.append(f"{repo} (repo not in the Hugging Face cache {cache})")
        return None
    snapshots = repo / "snapshots"
    if revision is None and not (repo / "refs" / "main").is_file():
        # A cache filled with an explicit commit has no refs/main: accept its snapshot when it is the only one.
        cached = sorted(p.name for p in snapshots.iterdir() if p.is_dir()) if snapshots.is_dir() else []
        if len(cached) != 1:
            looked.append(f"{repo} (no refs/main and {len(cached)} snapshots {cached}; pass revision=)")
            return None
        revision = cached[0]
    from huggingface_hub import try_to_load_from_cache  # imported here: building the network needs torch only

    paths = [try_to_load_from_cache(repo_id, name, cache_dir=cache, revision=revision)
             for name in (CONFIG_NAME, WEIGHTS_NAME)]
    if all(isinstance(p, str) for p in paths):
        return Path(paths[0]), Path(paths[1])
    absent = [name for name, p in zip((CONFIG_NAME, WEIGHTS_NAME), paths) if not isinstance(p, str)]
    looked.append(f"{repo} (revision {revision or 'main'}: {' and '.join(absent)} not cached)")
    return None


# Upstream aliases (facts read from upstream map-anything's module tree, listed in the fixtures'
# mapanything_full_state_dict.txt section 2): dense_head = Sequential(dpt_feature_head, dpt_regressor_head),
# and in the DPT scratch.layerN_rn == scratch.layer_rn.(N-1) == input_process.(N-1).1.
_ALIAS_RULES = (
    (re.compile(r"^dpt_feature_head\."), "dense_head.0."),
    (re.compile(r"^dpt_regressor_head\."), "dense_head.1."),
    (re.compile(r"^dense_head\.0\.scratch\.layer(\d)_rn\."), lambda m: f"dense_head.0.input_process.{int(m[1]) - 1}.1."),
    (re.compile(r"^dense_head\.0\.scratch\.layer_rn\.(\d+)\."), r"dense_head.0.input_process.\1.1."),
)


def canonical_key(name: str) -> str:
    """Map any upstream alias of a parameter name to the name kept in the released ``model.safetensors``."""
    for pattern, repl in _ALIAS_RULES:
        name = pattern.sub(repl, name)
    return name


def _file_to_module_names(file_keys, module_keys, metadata):
    """For each file key, the module key it loads into (None when it matches none).

    Exact names first; then the upstream alias rule; then the file's own alias metadata (dropped -> kept),
    used in both directions, so a file written with other kept names still loads.
    """
    groups = {}
    for dropped, kept in (metadata or {}).items():
        groups.setdefault(kept, set()).add(dropped)
        groups.setdefault(dropped, set()).add(kept)
    names = {}
    for key in file_keys:
        candidates = [key, canonical_key(key), *sorted(groups.get(key, ()))]
        names[key] = next((c for c in candidates if c in module_keys), None)
    return names


def load_weights(module: torch.nn.Module, weights_path, *, device="cpu", dtype=None) -> None:
    """Load a safetensors file into ``module`` strictly, memory-mapped, assigning the file's tensors.

    The key and shape check runs on the header before any tensor is read; every difference is reported at
    once (:class:`StateDictMismatchError`). On the CPU the parameters stay views of the (private, copy-on-write)
    memory map, so the host holds about one copy of the weights. Floating tensors become ``dtype`` (default:
    the module's own dtype), an explicit choice: nothing is down-cast silently.
    """
    from safetensors import SafetensorError, safe_open

    path = Path(weights_path)
    expected = dict(module.state_dict(keep_vars=True))
    try:
        handle = safe_open(os.fspath(path), framework="pt")
    except (SafetensorError, OSError) as err:
        raise CheckpointError(f"{path}: not a readable safetensors file ({err})") from err
    with handle:
        file_keys = list(handle.keys())
        names = _file_to_module_names(file_keys, expected.keys(), handle.metadata())
        unexpected = [k for k, n in names.items() if n is None]
        found = {}
        for key, name in names.items():
            if name is not None:
                found.setdefault(name, []).append(key)
        missing = [k for k in expected if k not in found]
        mismatched = {}
        for name, keys in found.items():
            for key in keys:
                shape = tuple(handle.get_slice(key).get_shape())
                if shape != tuple(expected[name].shape):
                    mismatched[key if key == name else f"{key} (alias of {name})"] = (shape, expected[name].shape)
        if missing or unexpected or mismatched:
            raise StateDictMismatchError(path, missing, unexpected, mismatched)
        state = {name: _read_one(handle, path, name, keys) for name, keys in found.items()}
    for name, tensor in state.items():
        target = expected[name]
        if tensor.is_floating_point() != target.is_floating_point():
            raise CheckpointError(f"{path}: {name} is {tensor.dtype}, the model's is {target.dtype}: not a MapAnything "
                                  "checkpoint of this kind (a quantised one?)")
        if tensor.is_floating_point():
            tensor = tensor.to(dtype or target.dtype)
        state[name] = tensor.to(device)
    module.load_state_dict(state, strict=True, assign=True)


def _read_one(handle, path, name, keys):
    """Read one tensor; redundant alias copies (a file saved with all upstream names) must be identical."""
    tensors = [handle.get_tensor(k) for k in keys]
    for key, other in zip(keys[1:], tensors[1:]):
        if not torch.equal(tensors[0], other):
            raise CheckpointError(f"{path}: aliased tensors {keys[0]} and {key} of {name} differ")
    return tensors[0]


def load_model(path_or_repo_id, device="cpu", *, dtype=None, cache_dir=None, revision=None,
               **network_kwargs) -> MapAnything:
    """Build MapAnything from a checkpoint and load its weights strictly; returns it in eval mode.

    ``path_or_repo_id``: a local checkpoint directory, a ``.safetensors`` file with ``config.json`` beside it,
    or a Hugging Face repo id read from the local cache only (:func:`resolve_checkpoint`). ``device``: "cpu",
    "cuda", "cuda:N" or "auto". ``dtype``: parameter dtype, default the file's float32 (mixed precision on
    CUDA comes from autocast in :class:`~mapanything_ros.model.runtime.Runtime`, not from the weights).
    ``network_kwargs`` go to the ``MapAnything`` constructor (e.g. ``feature_cache_size``).
    The network is built on the meta device and the memory-mapped tensors are assigned, so peak host memory
    stays near one copy of the weights; gradients are off.
    """
    device = select_device(device)
    config_path, weights_path = resolve_checkpoint(path_or_repo_id, cache_dir=cache_dir, revision=revision)
    config = read_config(config_path)
    if dtype is not None and not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating dtype, got {dtype}")
    try:
        with torch.device("meta"):
            model = MapAnything(config, **network_kwargs)
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"{config_path}: cannot build MapAnything from this config: {err!r}") from err
    load_weights(model, weights_path, device=device, dtype=dtype)
    model.reset_buffers()
    left = [name for name, t in model.state_dict(keep_vars=True).items() if t.is_meta]
    left += [name for name, t in model.named_buffers() if t.is_meta]
    if left:
        raise RuntimeError(f"tensors left on the meta device after loading: {', '.join(sorted(set(left)))}")
    return model.eval().requires_grad_(False)
