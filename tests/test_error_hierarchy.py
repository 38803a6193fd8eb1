"""One error hierarchy: every error mlcdseg raises for a user is an MlcdsegError, and all live in
mlcdseg.errors, so that a user of the library catches them with one `except MlcdsegError`."""

from __future__ import annotations

import ast
import inspect
import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mlcdseg import errors
from mlcdseg.engine.prompting import ChatmlPrompts
from mlcdseg.errors import (
    EngineError,
    ExpressionError,
    ImageDecodeError,
    MlcdsegError,
    ModelOutputError,
    PromptTemplateError,
    UnsupportedCheckpointError,
)
from mlcdseg.model.segmenter import Segmenter

REPO_ROOT = Path(__file__).resolve().parents[1]
#: Exceptions used as signals inside mlcdseg, always caught there and never raised to a user.
INTERNAL_SIGNALS = frozenset({
    "mlcdseg/labelstudio/tasks.py:Unusable",  # turned into a Skip (a reported reason) by its callers
})


def _public_error_classes() -> list[type[BaseException]]:
    return [
        value
        for name, value in vars(errors).items()
        if inspect.isclass(value) and issubclass(value, BaseException) and not name.startswith("_")
    ]


def test_every_public_error_class_derives_from_mlcdseg_error() -> None:
    classes = _public_error_classes()
    assert len(classes) > 20  # the hierarchy was read, not an empty module
    assert [cls.__name__ for cls in classes if not issubclass(cls, MlcdsegError)] == []


def _base_name(base: ast.expr) -> str:
    return base.attr if isinstance(base, ast.Attribute) else getattr(base, "id", "")


def _looks_like_an_error_class(node: ast.ClassDef, error_names: set[str]) -> bool:
    """Named like an error, or derived from one (a builtin *Error/Exception or an mlcdseg error)."""
    names = [node.name] + [_base_name(base) for base in node.bases]
    return any(name.endswith(("Error", "Exception")) or name in error_names for name in names)


def test_error_classes_are_defined_in_mlcdseg_errors_only() -> None:
    error_names = {cls.__name__ for cls in _public_error_classes()}
    defined_elsewhere = []
    for package in ("mlcdseg", "backend"):
        for path in sorted((REPO_ROOT / package).rglob("*.py")):
            if path == REPO_ROOT / "mlcdseg" / "errors.py":
                continue
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.ClassDef) and _looks_like_an_error_class(node, error_names):
                    defined_elsewhere.append(f"{path.relative_to(REPO_ROOT).as_posix()}:{node.name}")
    assert sorted(set(defined_elsewhere) - INTERNAL_SIGNALS) == []


class _FixedMasksEngine:
    """An engine that answers every prompt with the same masks array."""

    name = "fixed"

    def __init__(self, masks: np.ndarray) -> None:
        self.masks = masks

    def segment_many(self, image: Image.Image, prompts: Sequence[str], force_seg: bool) -> list[np.ndarray]:
        return [self.masks for _ in prompts]


def _segmenter(masks: np.ndarray, prompt_template: str = "Segment the {expression}.") -> Segmenter:
    return Segmenter(
        _FixedMasksEngine(masks),
        model_version="test",
        device="cpu",
        dtype="float32",
        is_stand_in=True,
        prompt_template=prompt_template,
    )


def _png(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), "white").save(buffer, format="PNG")
    return buffer.getvalue()


def test_a_template_without_placeholder_is_a_prompt_template_error() -> None:
    with pytest.raises(PromptTemplateError, match=r"must contain '\{expression\}'") as raised:
        _segmenter(np.zeros((0, 2, 3), dtype=bool), prompt_template="Segment it.")
    assert isinstance(raised.value, MlcdsegError) and isinstance(raised.value, ValueError)


@pytest.mark.parametrize(
    ("image", "expression", "masks", "error_class"),
    [
        (_png(3, 2), " .. ", np.zeros((0, 2, 3), dtype=bool), ExpressionError),
        (b"not an image", "dog", np.zeros((0, 2, 3), dtype=bool), ImageDecodeError),
        # masks 3 × 2 for an image 3 wide and 2 high: the engine broke the (N, H, W) contract
        (_png(3, 2), "dog", np.zeros((1, 3, 2), dtype=bool), ModelOutputError),
    ],
    ids=["blank expression", "undecodable image", "masks of the wrong shape"],
)
def test_bad_segmenter_input_raises_an_mlcdseg_error(
    image: bytes, expression: str, masks: np.ndarray, error_class: type[MlcdsegError]
) -> None:
    with pytest.raises(MlcdsegError) as raised:
        _segmenter(masks).predict(image, expression)
    assert type(raised.value) is error_class


class _SplittingTokenizer:
    """A tokenizer that has no added tokens: every text is one id per character."""

    class _Encoding:
        def __init__(self, ids: list[int]) -> None:
            self.input_ids = ids

    def __call__(self, text: str, add_special_tokens: bool = True) -> _Encoding:
        return self._Encoding([ord(character) for character in text])


def test_a_tokenizer_without_the_seg_token_is_an_unsupported_checkpoint() -> None:
    with pytest.raises(UnsupportedCheckpointError, match=r"'\[SEG\]'") as raised:
        ChatmlPrompts(_SplittingTokenizer(), "You are a helpful assistant.")
    assert isinstance(raised.value, EngineError) and isinstance(raised.value, MlcdsegError)
