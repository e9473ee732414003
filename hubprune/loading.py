"""Find a model (Hub repo id, local folder, GGUF file or the embedded default), check that the job
fits before loading it, and load it with its tokenizer on the requested device and dtype."""
from __future__ import annotations

import errno
import logging
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from huggingface_hub import constants as hub_constants
from huggingface_hub import errors as hub_errors
from huggingface_hub import snapshot_download
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PretrainedConfig, PreTrainedModel

from . import embedded, memory
from . import distributed
from .errors import (
    AuthenticationError,
    DamagedModelError,
    RemoteCodeError,
    GatedRepoAccessError,
    HubPruneError,
    InsufficientResourcesError,
    InvalidOptionError,
    ModelNotFoundError,
    OfflineError,
)
from .families import Family, get_family
from .references import check_model_reference
from .modeling import OWN_CLASSES, register_own_classes
from .outputs import read_json_object
from .sequential import ShardReader
from .surgery import model_class, total_parameters

# What a causal LM needs from a repo: weights (safetensors only), config, tokenizer, generation config.
# A repo's Python files are fetched only when the user trusts them (--trust-remote-code).
HUB_FILE_PATTERNS = ["*.safetensors", "*.safetensors.index.json", "config.json", "generation_config.json",
                     "tokenizer*", "special_tokens_map.json", "*.model", "vocab.*", "merges.txt",
                     "README.md"]  # the base model's card: its license is inherited
CODE_FILE_PATTERNS = ["*.py"]
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
GiB = 1024**3
logger = logging.getLogger("hubprune")
OFFLINE_ERRORS = (hub_errors.LocalEntryNotFoundError, hub_errors.OfflineModeIsEnabled, ConnectionError)


@dataclass
class ModelSource:
    """Where a model came from, as recorded in outputs and model cards."""

    reference: str  # what the user typed
    path: Path  # local folder holding config + weights
    repo_id: str | None = None  # Hub repo (None for local folders)
    revision: str | None = None  # commit hash of the snapshot
    gguf_file: str | None = None
    weight_bytes: int = 0  # on-disk size of the weights
    trust_remote_code: bool = False  # the user allowed the folder's own Python code to run


@dataclass
class LoadedModel:
    model: PreTrainedModel
    tokenizer: object
    family: Family
    source: ModelSource
    device: torch.device
    dtype: torch.dtype
    # Set when loaded with `offload`: `model` is then a weightless (meta) skeleton and the blocks are
    # read from these shards one at a time (see `sequential.DecoderStack`).
    shards: ShardReader | None = None


def resolve_device(device: str) -> torch.device:
    """The device to work on. Under torchrun each process takes its own GPU (cuda:LOCAL_RANK) and joins
    the process group here."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InvalidOptionError(f"--device {device}: no CUDA GPU is visible to torch; use --device cpu")
    if not device.startswith(("cuda", "cpu")):
        raise InvalidOptionError(f"--device {device!r}: choose cuda, cpu or auto")
    chosen = distributed.device_for(torch.device(device))
    distributed.start(chosen)
    return chosen


def resolve_dtype(dtype: str, config: PretrainedConfig) -> torch.dtype:
    if dtype == "auto":
        stored = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
        if isinstance(stored, str):
            stored = DTYPES.get(stored)
        return stored if isinstance(stored, torch.dtype) else torch.float32
    if dtype not in DTYPES:
        raise InvalidOptionError(f"--dtype {dtype!r}: choose auto, {', '.join(DTYPES)}")
    return DTYPES[dtype]


def _hub_error(exc: Exception, repo_id: str, revision: str | None) -> HubPruneError:
    """One table from huggingface_hub's exceptions to messages that say what to do."""
    if isinstance(exc, hub_errors.GatedRepoError):
        return GatedRepoAccessError(
            f"{repo_id} is gated: accept its license at https://huggingface.co/{repo_id}, then pass a token "
            "of that account with --token, HF_TOKEN or `hf auth login`")
    if isinstance(exc, hub_errors.RevisionNotFoundError):
        return ModelNotFoundError(f"{repo_id} has no revision {revision!r}; check --revision (branch, tag or commit)")
    if isinstance(exc, hub_errors.RepositoryNotFoundError):
        return ModelNotFoundError(
            f"no model repo {repo_id} on the Hub (or it is private: pass a token with --token or HF_TOKEN); "
            "a local folder must exist")
    if isinstance(exc, hub_errors.HfHubHTTPError) and getattr(exc.response, "status_code", None) == 401:
        return AuthenticationError(f"the Hub refused the token for {repo_id}: set a valid one with --token or HF_TOKEN")
    if isinstance(exc, OFFLINE_ERRORS):
        return OfflineError(
            f"cannot reach the Hub and {repo_id} is not in the local cache; connect once to download it, "
            "or pass a local model folder")
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return InsufficientResourcesError(f"disk full while downloading {repo_id}; free space or set HF_HOME to a larger disk")
    raise exc


def resolve_model(reference: str, *, revision: str | None = None, token: str | None = None,
                  trust_remote_code: bool = False) -> ModelSource:
    """Turn what the user typed into a local folder, downloading from the Hub when needed."""
    source = _resolve(reference, revision=revision, token=token, trust_remote_code=trust_remote_code)
    source.trust_remote_code = trust_remote_code
    return source


def _resolve(reference: str, *, revision: str | None, token: str | None, trust_remote_code: bool) -> ModelSource:
    if reference == embedded.DEFAULT_MODEL:
        path = embedded_model_dir()
        return ModelSource(reference, path, repo_id=embedded.DEFAULT_MODEL_NAME, weight_bytes=_weight_bytes(path))
    local = check_model_reference(reference)
    if local is not None and local.suffix == ".gguf":
        return ModelSource(reference, local.parent, gguf_file=local.name, weight_bytes=local.stat().st_size)
    if local is not None:
        return ModelSource(reference, local, weight_bytes=_weight_bytes(local))
    patterns = HUB_FILE_PATTERNS + (CODE_FILE_PATTERNS if trust_remote_code else [])
    return _download(reference, revision=revision, token=token, patterns=patterns)


def _download(repo_id: str, *, revision: str | None, token: str | None, patterns: list[str]) -> ModelSource:
    try:
        _check_download_space(repo_id, revision, token, patterns)
        path = Path(snapshot_download(repo_id, revision=revision, token=token, allow_patterns=patterns))
    except HubPruneError:
        raise
    except OFFLINE_ERRORS:
        try:  # offline: a cached snapshot is enough
            path = Path(snapshot_download(repo_id, revision=revision, allow_patterns=patterns,
                                          local_files_only=True))
        except Exception as exc:  # noqa: BLE001 - translated or re-raised by _hub_error
            raise _hub_error(exc, repo_id, revision) from None
    except Exception as exc:  # noqa: BLE001
        raise _hub_error(exc, repo_id, revision) from None
    if not list(path.glob("*.safetensors")):
        raise ModelNotFoundError(f"{repo_id} has no safetensors weights; hubprune loads safetensors only")
    return ModelSource(repo_id, path, repo_id=repo_id, revision=path.name, weight_bytes=_weight_bytes(path))


def _check_download_space(repo_id: str, revision: str | None, token: str | None, patterns: list[str]) -> None:
    """Refuse before downloading when the files still to fetch do not fit on the cache's disk."""
    try:
        files = snapshot_download(repo_id, revision=revision, token=token, allow_patterns=patterns, dry_run=True)
    except hub_errors.DryRunError:
        return  # offline or no access: the real download reports why
    missing = sum(f.file_size or 0 for f in files if f.will_download)
    if not missing:
        return
    cache = Path(hub_constants.HF_HUB_CACHE)
    cache.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(cache).free
    if missing > free:
        raise InsufficientResourcesError(
            f"downloading {repo_id} needs {missing / GiB:.1f} GiB but {cache} has {free / GiB:.1f} GiB free; "
            "free space or set HF_HOME to a larger disk")


def _weight_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.glob("*.safetensors"))


def check_weights(source: ModelSource) -> None:
    """Read every safetensors header (not the tensors): a truncated or corrupt file is refused in one
    line before anything is loaded, instead of failing deep inside a load or a stream."""
    from safetensors import SafetensorError, safe_open

    for file in sorted(source.path.glob("*.safetensors")) if not source.gguf_file else []:
        try:
            with safe_open(file, framework="pt"):
                pass
        except (SafetensorError, OSError) as exc:
            raise DamagedModelError(f"{file} is damaged or incomplete ({exc}); delete it and download or copy it "
                                    "again") from None


def read_json(path: Path) -> dict:
    """A model folder's JSON file, or one line that says which file is broken."""
    return read_json_object(path, ModelNotFoundError, "re-download or repair the model folder")


def code_trust(source: ModelSource) -> bool:
    """Whether transformers may run the Python files of `source`'s folder.

    hubprune's own outputs never need to: their classes are this package's (registered with the Auto
    classes), whatever the folder's .py files say. Anything else that names its own code (`auto_map` in
    config.json or tokenizer_config.json) is refused unless the user passed --trust-remote-code."""
    if source.gguf_file:
        return False
    config = read_json(source.path / "config.json")
    if config.get("model_type") in OWN_CLASSES:
        return False
    tokenizer_file = source.path / "tokenizer_config.json"
    tokenizer = read_json(tokenizer_file) if tokenizer_file.is_file() else {}
    code = sorted({f"{file}: {entry}" for file, data in (("config.json", config), ("tokenizer_config.json", tokenizer))
                   for entry in _code_references(data.get("auto_map"))})
    if code and not source.trust_remote_code:
        raise RemoteCodeError(
            f"{source.reference} ships its own Python code ({code[0]}{', ...' if len(code) > 1 else ''}), which hubprune "
            "never runs unless asked: read that code, then pass --trust-remote-code")
    return bool(code)


def _code_references(auto_map) -> list[str]:
    if isinstance(auto_map, dict):
        return [str(v) for value in auto_map.values() for v in (value if isinstance(value, list) else [value]) if v]
    return [str(v) for v in auto_map or [] if v]


def load_config(source: ModelSource) -> PretrainedConfig:
    if source.gguf_file:
        return AutoConfig.from_pretrained(source.path, gguf_file=source.gguf_file)
    register_own_classes()
    trust = code_trust(source)
    try:
        return AutoConfig.from_pretrained(source.path, trust_remote_code=trust)
    except (ValueError, KeyError, TypeError) as exc:  # transformers' own validation of the config's values
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelNotFoundError(f"cannot read {source.path / 'config.json'}: {first}") from None


def parameter_count(config: PretrainedConfig) -> int:
    """Exact parameter count of a config's model, from a weightless (meta) instantiation."""
    with torch.device("meta"):
        return total_parameters(model_class(config)._from_config(config))


@dataclass
class Preflight:
    """Memory a job needs and what the machine has, in bytes."""

    model_bytes: int
    needed: dict[str, int]
    available: dict[str, int]
    working: dict[str, int] = field(default_factory=dict)  # the method's own, included in `needed`

    def check(self, *, output: Path | None) -> None:
        advice = {"gpu": "use --offload, --dtype bfloat16 (or float16), fewer --calib-samples or a shorter --seq-len",
                  "ram": "use --offload, --dtype bfloat16, fewer --calib-samples, or a machine with more memory",
                  "disk": "free space or choose --output on a larger disk"}
        for resource, need in self.needed.items():
            have = self.available.get(resource)
            if have is None or need <= have:
                continue
            what = f"disk at {output}" if resource == "disk" else f"{resource.upper()} memory"
            method = sum(self.working.values())
            raise InsufficientResourcesError(
                f"not enough {what}: the job needs about {need / GiB:.1f} GiB (model {self.model_bytes / GiB:.1f} GiB"
                + (f", the method's working memory {method / GiB:.1f} GiB" if method else "")
                + f") but {have / GiB:.1f} GiB is free; {advice[resource]}")


def preflight(config: PretrainedConfig, dtype: torch.dtype, device: torch.device, output: Path | None,
              *, offload: bool = False, working: dict[str, int] | None = None) -> Preflight:
    """In memory, the dense model and its pruned copy are both held: budget 2x the model (+10 %).
    With `offload`, one block plus the embeddings and head, and twice that for activations. `working` is
    the method's own estimate (`PruningMethod.working_memory`): "device" where the work runs, "host" in
    RAM, "disk" beside the output."""
    model_bytes = parameter_count(config) * torch.finfo(dtype).bits // 8
    if offload:
        resident = model_bytes / config.num_hidden_layers + 2 * config.vocab_size * config.hidden_size * dtype.itemsize
        needed = {"ram" if device.type == "cpu" else "gpu": int(3 * resident)}
    else:
        needed = {"ram" if device.type == "cpu" else "gpu": int(2.2 * model_bytes)}
    working = {k: int(v) for k, v in (working or {}).items() if v}
    where = "ram" if device.type == "cpu" else "gpu"
    needed[where] += working.get("device", 0)
    if working.get("host"):
        needed["ram"] = needed.get("ram", 0) + working["host"]
    available: dict[str, int] = {}
    if device.type == "cuda":
        available["gpu"] = torch.cuda.mem_get_info(device)[0]
    ram = memory.available_ram()
    if ram is not None:
        available["ram"] = ram
    if output is not None:
        needed["disk"] = model_bytes + working.get("disk", 0)
        existing = next((p for p in [output, *output.parents] if p.exists()), Path("."))
        available["disk"] = shutil.disk_usage(existing).free
    return Preflight(model_bytes, needed, available, working)


def load_model(reference: str, *, device: str = "auto", dtype: str = "auto", revision: str | None = None,
               token: str | None = None, output: Path | None = None, offload: bool | None = False,
               check: Callable[[PreTrainedModel], None] | None = None, trust_remote_code: bool = False,
               working_memory: Callable[[PretrainedConfig, torch.dtype], dict] | None = None) -> LoadedModel:
    """Resolve, check and load a supported causal LM with its tokenizer.

    With `offload`, no block is loaded: the model is a weightless skeleton whose blocks
    `sequential.DecoderStack` streams from the safetensors shards one at a time. `offload=None`
    streams only when the model does not fit in memory but one block does. `check` receives the
    weightless model before any weight is read (e.g. a method refusing an infeasible budget), and
    `working_memory(config, dtype)` the method's own memory needs, added to the pre-flight check.
    A model's own Python code (auto_map) runs only with `trust_remote_code`; hubprune's outputs load
    with this package's classes and need no trust."""
    source = resolve_model(reference, revision=revision, token=token, trust_remote_code=trust_remote_code)
    check_weights(source)
    config = load_config(source)
    family = get_family(config.model_type)  # refuses unsupported families before loading any weight
    torch_device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, config)
    working = working_memory(config, torch_dtype) if working_memory is not None else None
    try:
        preflight(config, torch_dtype, torch_device, output, offload=bool(offload), working=working).check(output=output)
    except InsufficientResourcesError:
        if offload is not None or source.gguf_file:
            raise
        preflight(config, torch_dtype, torch_device, output, offload=True, working=working).check(output=output)
        logger.warning("the model does not fit in memory: its blocks are streamed from the shards one at a time "
                       "(as with --offload)")
        offload = True
    if offload and source.gguf_file:
        raise InvalidOptionError("--offload streams safetensors shards; a .gguf file cannot be streamed "
                                 "(convert it once with `hubprune prune` without --offload, or use the original repo)")
    with torch.device("meta"):
        skeleton = model_class(config)._from_config(config, dtype=torch_dtype)
    if check is not None:
        check(skeleton)
    kwargs = {"gguf_file": source.gguf_file} if source.gguf_file else {"trust_remote_code": code_trust(source)}
    tokenizer = AutoTokenizer.from_pretrained(source.path, **kwargs) if has_tokenizer(source) else None
    if offload:
        shards = ShardReader(source.path)
        return LoadedModel(skeleton.eval(), tokenizer, family, source, torch_device, torch_dtype, shards=shards)
    model = AutoModelForCausalLM.from_pretrained(source.path, dtype=torch_dtype, device_map=torch_device, **kwargs)
    if source.gguf_file:  # dequantized on load: drop the quantizer so the model behaves as a plain one
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
    model.eval()
    return LoadedModel(model, tokenizer, family, source, torch_device, torch_dtype)


def embedded_model_dir() -> Path:
    """The default model as a safetensors folder, converted from the GGUF on first use."""
    target = embedded.cache_dir() / "models" / "SmolLM2-135M-Instruct"
    if (target / "config.json").is_file():
        return target
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    try:
        # The GGUF path of the ordinary loader (dequantizes to fp32).
        loaded = load_model(str(embedded.default_model_gguf()), device="cpu", dtype="float32")
        loaded.model.config.name_or_path = embedded.DEFAULT_MODEL_NAME
        loaded.model.save_pretrained(tmp)
        loaded.tokenizer.save_pretrained(tmp)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, target)  # atomic: a concurrent or interrupted run never sees half a folder
    except OSError:
        if (target / "config.json").is_file():  # another process finished first
            return target
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")


def has_tokenizer(source: ModelSource) -> bool:
    return bool(source.gguf_file) or any((source.path / name).is_file() for name in TOKENIZER_FILES)
