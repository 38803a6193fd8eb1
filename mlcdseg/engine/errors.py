"""Exceptions of the native engine: every refusal names what it refused."""


class EngineError(Exception):
    """Base class of the native engine's errors."""


class UnsupportedCheckpointError(EngineError):
    """The checkpoint's configuration names a part or value this engine does not implement."""

    def __init__(self, key: str, value: object, supported: str = "") -> None:
        self.key = key
        self.value = value
        hint = f" (supported: {supported})" if supported else ""
        super().__init__(f"unsupported checkpoint: {key}={value!r}{hint}")


class CheckpointMismatchError(EngineError):
    """The checkpoint's tensors do not fill the engine's parameters one to one."""

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
