"""Loading a checkpoint into the native engine (mlcdseg.engine), or saying why it cannot.

The native engine reads the checkpoint's config.json and safetensors itself (no remote code)
and refuses any checkpoint it cannot reproduce exactly: an unknown tower, projector or merge
type, or tensors that do not fill its parameters one to one. load_model then falls back to the
official path (engine "auto") or stops (engine "native").
"""

from pathlib import Path
from typing import Any

from mlcdseg.errors import EngineError, ModelNotFoundError, NativeEngineRefused, one_line
from mlcdseg.model.engines import NativeEngineAdapter
from mlcdseg.model.hub import in_hub_cache

#: The checkpoint files the native engine reads from a hub snapshot.
_NATIVE_FILES = ("*.json", "*.safetensors", "*.model", "*.txt", "*.tiktoken")


def checkpoint_directory(reference: str, revision: str | None, is_local: bool) -> Path:
    """The local directory holding the checkpoint: `reference` itself, or its hub snapshot.

    A hub id is taken from the Hugging Face cache when it is there, else downloaded (the
    checkpoint files only). ModelNotFoundError when neither works.
    """
    if is_local:
        return Path(reference)
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:
        return Path(
            snapshot_download(
                reference,
                revision=revision,
                allow_patterns=list(_NATIVE_FILES),
                local_files_only=in_hub_cache(reference, revision),
            )
        )
    except (HfHubHTTPError, LocalEntryNotFoundError, OSError) as error:
        raise ModelNotFoundError(
            f"cannot get model {reference!r} from the Hugging Face cache or hub: {one_line(error)}"
        ) from error


def load_native(directory: Path, device: str, torch_dtype: Any) -> NativeEngineAdapter:
    """The native engine over the checkpoint in `directory`, proven by one tiny forward;
    NativeEngineRefused when it cannot be loaded or that forward fails."""
    from mlcdseg.engine import load_native_engine

    try:
        engine = load_native_engine(directory, device=device, dtype=torch_dtype)
    except (EngineError, OSError, ValueError) as error:
        raise NativeEngineRefused(one_line(error)) from error
    prove_first_forward(engine)
    return NativeEngineAdapter(engine)


def prove_first_forward(engine: Any) -> None:
    """Run one tiny forward (a 32×32 grey image, one forced one-word prompt, outside the cache):
    an engine this torch or device cannot run is refused at load, never served.

    Raises NativeEngineRefused naming the error (for example an argument an older torch lacks).
    """
    from PIL import Image

    probe = Image.new("RGB", (32, 32), (128, 128, 128))
    try:
        engine.segment(engine.encode_image(probe, use_cache=False), ["object"], force_seg=True)
    except Exception as error:  # noqa: BLE001 - whatever breaks the forward, the engine is not served
        raise NativeEngineRefused(f"its first forward failed: {type(error).__name__}: {one_line(error)}") from error
