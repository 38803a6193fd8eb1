"""The prompt MLCD-Seg gets for a referring expression: the model card's template, or the text as is.

Pure text, no torch: the backend settings and the command line check templates and expressions
with it before any model is loaded.
"""

import re

from mlcdseg.errors import ExpressionError, PromptTemplateError

EXPRESSION_PLACEHOLDER = "{expression}"
#: The prompt form of the MLCD-Seg model card.
DEFAULT_PROMPT_TEMPLATE = (
    "Could you provide a segmentation mask for the {expression} in this image?"
)
_ONE_WORD_OPENERS = frozenset({"segment", "please"})
_TWO_WORD_OPENERS = frozenset({("could", "you"), ("can", "you"), ("would", "you"), ("will", "you")})
_ENDS_WITH_THE = re.compile(r"\bthe\s*$", re.IGNORECASE)
_STARTS_WITH_THE = re.compile(r"^the\s+", re.IGNORECASE)


def check_prompt_template(template: str) -> str:
    """Return `template` if it contains "{expression}", else raise PromptTemplateError (a ValueError)."""
    if EXPRESSION_PLACEHOLDER not in template:
        raise PromptTemplateError(
            f"prompt template {template!r} must contain {EXPRESSION_PLACEHOLDER!r} where the "
            f"expression goes, e.g. {DEFAULT_PROMPT_TEMPLATE!r}"
        )
    return template


def is_full_prompt(text: str) -> bool:
    """True when `text` is already a question or instruction: it ends with "?", its first word is
    "segment" or "please", or it starts with "could you", "can you", "would you" or "will you"."""
    stripped = text.strip()
    words = tuple(re.findall(r"[a-z]+", stripped.lower()))
    return (
        stripped.endswith("?")
        or (len(words) > 0 and words[0] in _ONE_WORD_OPENERS)
        or words[:2] in _TWO_WORD_OPENERS
    )


def build_prompt(expression: str, template: str = DEFAULT_PROMPT_TEMPLATE) -> str:
    """The prompt MLCD-Seg gets for `expression`.

    A full question or instruction (see `is_full_prompt`) is sent as is, stripped. A bare
    referring expression ("man in the red shirt") loses surrounding blanks and trailing full
    stops, and a leading "the" when the template already says "the {expression}", and goes into
    `template` at "{expression}". Raises ExpressionError (a ValueError) for an expression
    that is blank, only full stops or not valid Unicode (a lone surrogate, which JSON's "\\ud800"
    can carry and no tokenizer can encode), PromptTemplateError (a ValueError) for a template
    without "{expression}".
    """
    check_prompt_template(template)
    try:
        expression.encode("utf-8")
    except UnicodeEncodeError:
        raise ExpressionError(
            f"the referring expression {expression!r} is not valid Unicode text"
        ) from None
    if is_full_prompt(expression):
        return expression.strip()
    bare = expression.strip().rstrip(".").strip()
    if not bare:
        raise ExpressionError(
            f"the referring expression {expression!r} is empty once blanks and trailing full "
            "stops are dropped; give a phrase naming what to segment"
        )
    if _ENDS_WITH_THE.search(template.split(EXPRESSION_PLACEHOLDER, 1)[0]):
        bare = _STARTS_WITH_THE.sub("", bare)  # "for the {expression}" + "the dog": no "the the"
    return template.replace(EXPRESSION_PLACEHOLDER, bare)
