"""Load MLCD-Seg (or the offline stand-in) from a hub id or a local directory as a `Segmenter`.

Loading follows the model card: ``AutoModel.from_pretrained(model, trust_remote_code=True,
torch_dtype=...)`` and ``AutoTokenizer.from_pretrained(model, use_fast=False)``. Also here:
device and dtype resolution, telling a model directory from a hub id, and the model version
reported with every prediction. torch and transformers are imported only when a model is loaded.
"""

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlcdseg.errors import ModelLoadError, ModelNotFoundError, NativeEngineRefused, PromptTemplateError, library_reason
from mlcdseg.model.prompts import DEFAULT_PROMPT_TEMPLATE, check_prompt_template
from mlcdseg.model.segmenter import Segmenter
from mlcdseg.model.engines import ENGINE_CHOICES, NATIVE, OFFICIAL, NativeEngineAdapter, OfficialEngine
from mlcdseg.model.hub import in_hub_cache
from mlcdseg.model.native import checkpoint_directory, load_native
from mlcdseg.model.stand_in import STAND_IN_MODEL_TYPE, is_stand_in_directory

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "DeepGlint-AI/MLCD-Seg-7B"
DTYPES = ("auto", "float16", "bfloat16", "float32")
#: model_version of the offline stand-in starts with this, so it is never mistaken for MLCD-Seg.
STAND_IN_VERSION_PREFIX = "stand-in:"
#: model_version of masks made by the native engine ends with this.
NATIVE_VERSION_SUFFIX = "+native"

# Files up to this size feed their content into a local directory's fingerprint; larger ones
# (weight shards) only their name and size, so fingerprinting a 17 GB model stays instant.
_FINGERPRINT_CONTENT_LIMIT = 16 * 1024 * 1024


def load_model(
    model: str = DEFAULT_MODEL,
    revision: str | None = None,
    device: str = "auto",
    dtype: str = "auto",
    prompt_template: str = DEFAULT_PROMPT_TEMPLATE,
    force_seg: bool = False,
    engine: str = "auto",
) -> Segmenter:
    """Load MLCD-Seg from a hub id or a local directory (or the offline stand-in) for predict.

    device: "auto" (cuda when available, else cpu), "cpu", "cuda" or "cuda:N". dtype: "auto"
    (float16 on CUDA as on the model card, float32 on CPU), "float16", "bfloat16" or "float32";
    half precision asked for on CPU falls back to float32 with a warning. `revision` pins the
    hub commit. A hub model found in the Hugging Face cache (HF_HOME) loads from there without
    network access; otherwise from_pretrained downloads it. engine: "native" runs our own
    implementation (mlcdseg.engine: each image encoded once, expressions batched, no remote
    code), "official" the model card's remote code, "auto" native when it can reproduce the
    checkpoint, else official with a warning saying why. Raises ModelNotFoundError (no such
    directory, or a hub id that is neither cached nor reachable) and ModelLoadError (the rest,
    including engine "native" on a checkpoint it refuses).
    """
    if engine not in ENGINE_CHOICES:
        raise ModelLoadError(f"unknown engine {engine!r}: use one of {', '.join(ENGINE_CHOICES)}")
    try:
        check_prompt_template(prompt_template)
    except PromptTemplateError as error:
        raise ModelLoadError(str(error)) from None
    location = _locate(model)
    device_name = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, device_name)
    dtype_name = str(torch_dtype).removeprefix("torch.")
    native = _native_engine(location, revision, torch_dtype, device_name, engine)
    if native is not None:
        segment_engine, commit, is_stand_in = native
    else:
        network, tokenizer = _load_network_and_tokenizer(location, revision, torch_dtype, device_name)
        segment_engine = OfficialEngine(network, tokenizer)
        commit = getattr(network.config, "_commit_hash", None)
        is_stand_in = getattr(network.config, "model_type", None) == STAND_IN_MODEL_TYPE
    segmenter = Segmenter(
        segment_engine,
        model_version=_model_version(location, revision, commit, is_stand_in, segment_engine.name),
        device=device_name,
        dtype=dtype_name,
        is_stand_in=is_stand_in,
        prompt_template=prompt_template,
        force_seg=force_seg,
    )
    _log_loaded(segmenter, location, revision)
    return segmenter


def resolve_device(device: str) -> str:
    """Torch device name for "auto", "cpu", "cuda" or "cuda:N"; ModelLoadError if unusable."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError):
        parsed = None
    if parsed is None or parsed.type not in ("cpu", "cuda"):
        raise ModelLoadError(f"unknown device {device!r}: use auto, cpu, cuda or cuda:N")
    if parsed.type == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError(
            f"device {device!r} was asked for but PyTorch sees no CUDA GPU; use device cpu or auto"
        )
    if parsed.type == "cuda" and (parsed.index or 0) >= torch.cuda.device_count():
        raise ModelLoadError(
            f"device {device!r} does not exist: PyTorch sees {torch.cuda.device_count()} GPU(s)"
        )
    return str(parsed)


def resolve_dtype(dtype: str, device: str) -> Any:
    """torch.dtype for `dtype` on `device` (see load_model); ModelLoadError for an unknown name."""
    import torch

    if dtype not in DTYPES:
        raise ModelLoadError(f"unknown dtype {dtype!r}: use one of {', '.join(DTYPES)}")
    on_gpu = device.startswith("cuda")
    if dtype == "auto":
        return torch.float16 if on_gpu else torch.float32
    if not on_gpu and dtype != "float32":
        logger.warning("%s is slow or unsupported on CPU for this model; using float32", dtype)
        return torch.float32
    return getattr(torch, dtype)


@dataclass(frozen=True)
class _ModelLocation:
    """Where the weights come from: `reference` is what from_pretrained gets."""

    reference: str  # a hub id, or an absolute directory path
    name: str  # the hub id or the directory's name, for model_version
    is_local: bool


def check_model_source(model: str) -> None:
    """Raise ModelNotFoundError for an empty name, a missing model directory or a file.

    Cheap (no imports, no network): a server checks its model before it starts workers. A hub
    id is only checked when loading.
    """
    _locate(model)


def _locate(model: str) -> _ModelLocation:
    """Tell a local model directory from a hub id; ModelNotFoundError for a missing directory."""
    if not model.strip():
        raise ModelNotFoundError("no model given: pass a hub id such as " + DEFAULT_MODEL)
    path = Path(model).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ModelNotFoundError(
                f"model path {model!r} is a file; give a model directory (with config.json) or a hub id"
            )
        resolved = path.resolve()
        return _ModelLocation(reference=str(resolved), name=resolved.name, is_local=True)
    parent = path.parent
    looks_like_path = (
        model.startswith(("/", ".", "~"))
        or "\\" in model
        or model.count("/") > 1
        or (parent != Path(".") and parent.exists())
    )
    if looks_like_path:
        raise ModelNotFoundError(f"model directory {str(path.absolute())!r} does not exist")
    return _ModelLocation(reference=model, name=model, is_local=False)


def _load_network_and_tokenizer(
    location: _ModelLocation, revision: str | None, torch_dtype: Any, device: str
) -> tuple[Any, Any]:
    """from_pretrained the tokenizer and model, move the model to `device`, eval mode."""
    from transformers import AutoModel, AutoTokenizer

    # A hub model already in the local cache loads from there without touching the network:
    # no slow retries when the hub is unreachable, and no remote code changing under a server.
    # `huggingface-cli download` updates it.
    cached = not location.is_local and in_hub_cache(location.reference, revision)
    try:
        tokenizer = AutoTokenizer.from_pretrained(
            location.reference, revision=revision, use_fast=False, local_files_only=cached
        )
        network = AutoModel.from_pretrained(
            location.reference,
            revision=revision,
            trust_remote_code=True,
            torch_dtype=torch_dtype,
            local_files_only=cached,
        )
        network.to(device).eval()
    except OSError as error:  # includes huggingface_hub's HTTP and offline errors
        reason = library_reason(error)
        if location.is_local:
            raise ModelLoadError(
                f"cannot load the model in {location.reference}: {reason}"
            ) from error
        pinned = f" --revision {revision}" if revision else ""
        raise ModelNotFoundError(
            f"cannot get model {location.reference!r} from the Hugging Face cache or hub ({reason}). "
            f"Download the weights first, e.g. `HF_HOME=/models huggingface-cli download "
            f"{location.reference}{pinned}`, and run with the same HF_HOME, or pass a local model "
            "directory"
        ) from error
    except Exception as error:  # remote code fails in many ways: missing packages, GPU memory…
        raise ModelLoadError(
            f"cannot load model {location.name!r}: {type(error).__name__}: {library_reason(error)}"
        ) from error
    return network, tokenizer


def available_offline(model: str, revision: str | None = None) -> bool:
    """True when `model` loads without the network: a local directory, or a hub id whose files
    the Hugging Face cache holds at `revision` (None: main)."""
    return Path(model).expanduser().is_dir() or in_hub_cache(model, revision)


def _native_engine(
    location: _ModelLocation, revision: str | None, torch_dtype: Any, device: str, engine: str
) -> tuple[NativeEngineAdapter, str | None, bool] | None:
    """(native engine, resolved commit, False) when `engine` asks for it and it can load the
    checkpoint; None for the official path. Engine "native" on a refused checkpoint (or the
    stand-in) is a ModelLoadError; "auto" logs the reason as a warning and falls back."""
    if engine == OFFICIAL:
        return None
    try:
        directory = checkpoint_directory(location.reference, revision, location.is_local)
    except ModelNotFoundError:
        if engine == NATIVE:
            raise
        return None  # the official path reports it in its own words
    if is_stand_in_directory(directory):
        if engine == NATIVE:
            raise ModelLoadError(
                f"{location.name} is the offline stand-in, which the native engine cannot run "
                "(only the official path runs it)"
            )
        return None
    try:
        adapter = load_native(directory, device, torch_dtype)
    except NativeEngineRefused as refusal:
        if engine == NATIVE:
            raise ModelLoadError(
                f"the native engine cannot load {location.name}: {refusal}; use --engine official "
                "(or auto) to run the model card's remote code"
            ) from refusal
        logger.warning(
            "the native engine cannot load %s (%s): falling back to the official seg() path, "
            "one full model call per expression",
            location.name,
            refusal,
        )
        return None
    commit = None if location.is_local else directory.name
    return adapter, commit, False


def _model_version(
    location: _ModelLocation,
    revision: str | None,
    commit: str | None,
    is_stand_in: bool,
    engine_name: str = OFFICIAL,
) -> str:
    """The model version "<hub id or directory name>@<revision>" (stand-in: with "stand-in:"),
    with "+native" when the native engine produced the masks.

    A hub model: the resolved commit (a branch or tag name is not a version), else the revision
    asked for. A local directory: the revision asked for, else the commit of a hub cache
    snapshot, else "local-" and a fingerprint of the directory's files.
    """
    if location.is_local:
        fingerprint = f"local-{_directory_fingerprint(Path(location.reference))}"
        resolved = revision or commit or fingerprint
    else:
        resolved = commit or revision or "unresolved"
    prefix = STAND_IN_VERSION_PREFIX if is_stand_in else ""
    suffix = NATIVE_VERSION_SUFFIX if engine_name == NATIVE else ""
    return f"{prefix}{location.name}@{resolved}{suffix}"


def _directory_fingerprint(directory: Path) -> str:
    """12 hex digits that change when a model directory's files change (hidden files skipped)."""
    digest = hashlib.sha256()
    for path in sorted(directory.rglob("*")):
        relative = path.relative_to(directory)
        if any(part.startswith(".") for part in relative.parts) or not path.is_file():
            continue
        size = path.stat().st_size
        digest.update(f"{relative.as_posix()}\0{size}\0".encode())
        if size <= _FINGERPRINT_CONTENT_LIMIT:
            digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def _log_loaded(segmenter: Segmenter, location: _ModelLocation, revision: str | None) -> None:
    """Log the load once; warn loudly for the stand-in, a CPU run, or unpinned hub code."""
    logger.info(
        "loaded model %s (version %s) on %s as %s",
        location.reference,
        segmenter.model_version,
        segmenter.device,
        segmenter.dtype,
    )
    if segmenter.is_stand_in:
        logger.warning(
            "OFFLINE STAND-IN model loaded from %s: a colour rule for tests and demos, NOT "
            "MLCD-Seg; its masks say nothing about MLCD-Seg",
            location.reference,
        )
        return
    if segmenter.device == "cpu":
        logger.warning(
            "MLCD-Seg runs on CPU: expect minutes per image and about 35 GB of RAM in float32; "
            "use a CUDA GPU with 17 GB or more for real work"
        )
    if not location.is_local and revision is None:
        logger.warning(
            "no revision pinned for %s: its remote code ran at the hub's current commit; pin it "
            "with revision=<commit> (version %s)",
            location.reference,
            segmenter.model_version,
        )
