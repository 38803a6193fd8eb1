"""Exceptions a user can act on; each message says what went wrong and what to do."""


def one_line(error: BaseException) -> str:
    """An exception's message on one line (each whitespace run, newlines too, as one space); its class name when empty."""
    return " ".join(str(error).split()) or type(error).__name__


#: The most characters of a library's own message that an mlcdseg error quotes.
LIBRARY_REASON_CHARS = 300


def library_reason(error: BaseException, limit: int = LIBRARY_REASON_CHARS) -> str:
    """The essential part of a library's (often many-line) message, on one line of at most `limit` characters.

    Libraries such as transformers put the cause on the first line and advice and links after it:
    the message's first non-blank line is kept, then the following lines while they still fit;
    a first line longer than `limit` is cut with an ellipsis.
    """
    lines = [" ".join(line.split()) for line in str(error).splitlines()]
    lines = [line for line in lines if line]
    if not lines:
        return type(error).__name__
    reason = lines[0]
    if len(reason) > limit:
        return reason[: limit - 1].rstrip() + "…"
    for line in lines[1:]:
        if len(reason) + 1 + len(line) > limit:
            break
        reason = f"{reason} {line}"
    return reason


class MlcdsegError(Exception):
    """Base class of every error that mlcdseg reports to a user as one line."""


class ModelNotFoundError(MlcdsegError):
    """The model path does not exist, or the hub id cannot be reached or resolved."""


class ModelLoadError(MlcdsegError):
    """The model files were found but could not be loaded."""


class GpuOutOfMemoryError(MlcdsegError):
    """The accelerator ran out of memory during one inference; the process stays usable."""


class ExpressionError(MlcdsegError, ValueError):
    """A referring expression the model cannot take: blank, only full stops, or not valid text."""


class ImageDecodeError(MlcdsegError):
    """Bytes or a file that are not a decodable image."""


class ImageFetchError(MlcdsegError):
    """An image URL that is refused, unreachable, too large or not an image."""


class MaskFormatError(MlcdsegError):
    """A mask encoding (brush RLE, COCO RLE, polygon) that is corrupt or does not fit its size."""


class LabelConfigError(MlcdsegError):
    """A Label Studio labeling config that lacks what mlcdseg needs, or names unknown controls."""


class ExportFormatError(MlcdsegError):
    """A Label Studio export that is not valid JSON or not a list of tasks."""


class LabelStudioError(MlcdsegError):
    """Label Studio is not installed, or answered a REST call with an error (the message holds its body)."""


class ServiceStartError(MlcdsegError):
    """A local service (Label Studio, the ML backend) exited or did not become ready while starting."""


class ReferDatasetError(MlcdsegError):
    """A RefCOCO (REFER API) dataset that is missing, unreadable, or names an unknown dataset or split."""


class SettingsError(MlcdsegError):
    """An environment variable or option holds a value mlcdseg cannot use."""


class PromptTemplateError(MlcdsegError, ValueError):
    """A prompt template without the "{expression}" placeholder."""


class ModelOutputError(MlcdsegError, RuntimeError):
    """A model answered outside its contract (e.g. masks of the wrong shape): a broken checkpoint or engine."""


class EngineError(MlcdsegError):
    """Base class of the native engine's errors."""


class UnsupportedCheckpointError(EngineError):
    """The checkpoint's configuration names a part or value the native engine does not implement."""

    def __init__(self, key: str, value: object, supported: str = "") -> None:
        self.key = key
        self.value = value
        hint = f" (supported: {supported})" if supported else ""
        super().__init__(f"unsupported checkpoint: {key}={value!r}{hint}")


class CheckpointMismatchError(EngineError):
    """The checkpoint's tensors do not fill the native engine's parameters one to one."""

    def __init__(self, missing: list[str], unexpected: list[str], wrong_shape: list[str]) -> None:
        self.missing = missing
        self.unexpected = unexpected
        self.wrong_shape = wrong_shape
        parts = []
        for label, names in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong_shape)):
            if names:
                listed = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
                parts.append(f"{len(names)} {label}: {listed}")
        super().__init__("checkpoint does not match the engine: " + "; ".join(parts))


class NestingTooDeepError(MlcdsegError):
    """JSON that nests deeper than allowed."""


class TaskDataError(MlcdsegError):
    """One task's data lacks what a prediction needs (e.g. its image field)."""


class RayUnavailableError(MlcdsegError):
    """--ray was asked for but Ray is not installed."""


class InvalidRequestError(MlcdsegError):
    """A request body to the ML backend that is malformed or does not fit the labeling config."""


class ServerBusyError(MlcdsegError):
    """Every prediction thread of the ML backend is taken; the request is refused rather than queued."""


class NativeEngineRefused(MlcdsegError):
    """The native engine cannot reproduce this checkpoint, or failed its first forward; the message says why."""


class RefinePromptError(MlcdsegError, ValueError):
    """Clicks, a box, a text embedding or previous logits that SAM's prompt encoder cannot take."""
