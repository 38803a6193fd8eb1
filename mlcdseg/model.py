"""MLCD-Seg (or the offline stand-in) behind one thread-safe `Segmenter.predict` call.

Loading follows the model card: ``AutoModel.from_pretrained(model, trust_remote_code=True,
torch_dtype=...)`` and ``AutoTokenizer.from_pretrained(model, use_fast=False)``; inference is the
official ``model.seg(image, prompt, tokenizer, force_seg)``, which returns 0/1 masks (N, H, W),
N = 0 meaning "no target". As in a transformers Pipeline, `Segmenter.predict` is preprocess
(decode the image, build the prompt: mlcdseg.prompts) → `_forward` (the only torch step, under a
lock) → `union_of_masks` (numpy). torch and transformers are imported only when a model is loaded.
"""

import hashlib
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from mlcdseg.errors import (
    GpuOutOfMemoryError,
    ModelLoadError,
    ModelNotFoundError,
    one_line,
)
from mlcdseg.images import ImageSource, load_image
from mlcdseg.prompts import DEFAULT_PROMPT_TEMPLATE, build_prompt, check_prompt_template
from mlcdseg.stand_in import STAND_IN_MODEL_TYPE

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "DeepGlint-AI/MLCD-Seg-7B"
DTYPES = ("auto", "float16", "bfloat16", "float32")
#: model_version of the offline stand-in starts with this, so it is never mistaken for MLCD-Seg.
STAND_IN_VERSION_PREFIX = "stand-in:"

# Files up to this size feed their content into a local directory's fingerprint; larger ones
# (weight shards) only their name and size, so fingerprinting a 17 GB model stays instant.
_FINGERPRINT_CONTENT_LIMIT = 16 * 1024 * 1024


@dataclass(frozen=True, eq=False)
class Prediction:
    """One answer: `mask` bool (H, W) at the EXIF-oriented image's size; the prompt sent.

    `has_target` is the model's own answer (it returned at least one mask); with force_seg the
    model always returns one, which may still be empty.
    """

    mask: np.ndarray
    has_target: bool
    prompt: str


def union_of_masks(masks: np.ndarray, height: int, width: int) -> tuple[np.ndarray, bool]:
    """Union bool (H, W) of the model's bool masks (N, H, W), and whether N > 0.

    MLCD-Seg can return several masks for one expression; one expression gets one region, so
    they are merged. N = 0 gives an all-False mask. A shape other than (N, height, width) is a
    broken model contract: RuntimeError.
    """
    if masks.ndim != 3 or masks.shape[1:] != (height, width):
        raise RuntimeError(
            f"the model returned masks of shape {tuple(masks.shape)}; expected (N, {height}, {width})"
        )
    return masks.any(axis=0), masks.shape[0] > 0


class Segmenter:
    """A loaded MLCD-Seg (or offline stand-in) that turns (image, expression) into a mask.

    `predict` is thread-safe: image decoding runs in parallel, the model call one at a time.
    Attributes: model, tokenizer, model_version, is_stand_in, device, dtype, prompt_template,
    force_seg (the default for predict).
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        model_version: str,
        device: str,
        dtype: str,
        is_stand_in: bool,
        prompt_template: str = DEFAULT_PROMPT_TEMPLATE,
        force_seg: bool = False,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.model_version = model_version
        self.device = device
        self.dtype = dtype
        self.is_stand_in = is_stand_in
        self.prompt_template = check_prompt_template(prompt_template)
        self.force_seg = force_seg
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Segmenter({self.model_version!r}, device={self.device!r}, dtype={self.dtype!r})"

    def predict(
        self, image: ImageSource, expression: str, *, force_seg: bool | None = None
    ) -> Prediction:
        """Segment what `expression` refers to in `image` (path, encoded bytes or PIL image).

        The image is EXIF-oriented and made 8-bit RGB first (mlcdseg.images.load_image); the
        mask is bool (H, W) at that size. force_seg=None uses the Segmenter's default. Raises
        ImageDecodeError, ExpressionError, GpuOutOfMemoryError (the next call works).
        """
        rgb_image = load_image(image)
        prompt = build_prompt(expression, self.prompt_template)
        masks = self._forward(rgb_image, prompt, self.force_seg if force_seg is None else force_seg)
        mask, has_target = union_of_masks(masks, rgb_image.height, rgb_image.width)
        return Prediction(mask=mask, has_target=has_target, prompt=prompt)

    def _forward(self, image: Image.Image, prompt: str, force_seg: bool) -> np.ndarray:
        """Run model.seg under the lock; bool masks (N, H, W) on the CPU."""
        import torch

        try:
            with self._lock, torch.inference_mode():
                masks = self.model.seg(image, prompt, self.tokenizer, force_seg=force_seg)
                return (masks != 0).cpu().numpy()
        except torch.cuda.OutOfMemoryError:
            pass  # handled below: leaving the except block first frees the failed call's tensors
        torch.cuda.empty_cache()
        raise GpuOutOfMemoryError(
            f"the GPU ran out of memory segmenting a {image.width}×{image.height} image with "
            f"{self.model_version}; free GPU memory (other processes, fewer workers) or use a "
            "smaller image — the model stays loaded and the next request can succeed"
        )


def load_model(
    model: str = DEFAULT_MODEL,
    revision: str | None = None,
    device: str = "auto",
    dtype: str = "auto",
    prompt_template: str = DEFAULT_PROMPT_TEMPLATE,
    force_seg: bool = False,
) -> Segmenter:
    """Load MLCD-Seg from a hub id or a local directory (or the offline stand-in) for predict.

    device: "auto" (cuda when available, else cpu), "cpu", "cuda" or "cuda:N". dtype: "auto"
    (float16 on CUDA as on the model card, float32 on CPU), "float16", "bfloat16" or "float32";
    half precision asked for on CPU falls back to float32 with a warning. `revision` pins the
    hub commit. A hub model found in the Hugging Face cache (HF_HOME) loads from there without
    network access; otherwise from_pretrained downloads it. Raises ModelNotFoundError (no such
    directory, or a hub id that is neither cached nor reachable) and ModelLoadError (the rest).
    """
    try:
        check_prompt_template(prompt_template)
    except ValueError as error:
        raise ModelLoadError(str(error)) from None
    location = _locate(model)
    device_name = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, device_name)
    network, tokenizer = _load_network_and_tokenizer(location, revision, torch_dtype, device_name)
    is_stand_in = getattr(network.config, "model_type", None) == STAND_IN_MODEL_TYPE
    dtype_name = str(torch_dtype).removeprefix("torch.")
    segmenter = Segmenter(
        network,
        tokenizer,
        model_version=_model_version(location, revision, network.config, is_stand_in),
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
    cached = not location.is_local and _in_hub_cache(location.reference, revision)
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
        reason = one_line(error)
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
            f"cannot load model {location.name!r}: {type(error).__name__}: {one_line(error)}"
        ) from error
    return network, tokenizer


def available_offline(model: str, revision: str | None = None) -> bool:
    """True when `model` loads without the network: a local directory, or a hub id whose files
    the Hugging Face cache holds at `revision` (None: main)."""
    return Path(model).expanduser().is_dir() or _in_hub_cache(model, revision)


def _in_hub_cache(repo_id: str, revision: str | None) -> bool:
    """Whether the Hugging Face cache holds config.json of `repo_id` at `revision` (None: main)."""
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(repo_id, "config.json", revision=revision), str)


def _model_version(
    location: _ModelLocation, revision: str | None, config: Any, is_stand_in: bool
) -> str:
    """The model version "<hub id or directory name>@<revision>" (stand-in: with "stand-in:").

    A hub model: the resolved commit (a branch or tag name is not a version), else the revision
    asked for. A local directory: the revision asked for, else the commit of a hub cache
    snapshot, else "local-" and a fingerprint of the directory's files.
    """
    commit = getattr(config, "_commit_hash", None)
    if location.is_local:
        fingerprint = f"local-{_directory_fingerprint(Path(location.reference))}"
        resolved = revision or commit or fingerprint
    else:
        resolved = commit or revision or "unresolved"
    prefix = STAND_IN_VERSION_PREFIX if is_stand_in else ""
    return f"{prefix}{location.name}@{resolved}"


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
