"""The model options every command that loads a model shares: --model, --revision, --device,
--dtype, --prompt-template, --engine, --force-seg. Their defaults come from mlcdseg.model.settings.ModelSettings
(the environment, read once when the command runs)."""

import argparse

from mlcdseg.errors import PromptTemplateError
from mlcdseg.model.engines import ENGINE_CHOICES
from mlcdseg.model.loading import DEFAULT_MODEL, DTYPES
from mlcdseg.model.prompts import check_prompt_template
from mlcdseg.model.settings import ModelSettings


def add_model_options(parser: argparse.ArgumentParser, *, engine: bool = True) -> None:
    """Add the model options; each left unset falls back to its environment variable.

    engine=False leaves out --engine, for a command that runs both engines.
    """
    parser.add_argument(
        "--model",
        help=f"hub id or local model directory (default: $MLCDSEG_MODEL or {DEFAULT_MODEL})",
    )
    parser.add_argument(
        "--revision",
        help="hub commit, tag or branch to load; pin a commit (default: $MLCDSEG_REVISION)",
    )
    parser.add_argument(
        "--device", help="auto, cpu, cuda or cuda:N (default: $MLCDSEG_DEVICE or auto)"
    )
    parser.add_argument(
        "--dtype",
        choices=DTYPES,
        help="weights precision; auto is float16 on CUDA, float32 on CPU (default: $MLCDSEG_DTYPE or auto)",
    )
    parser.add_argument(
        "--prompt-template",
        type=_prompt_template,
        help="prompt for a bare expression; must contain {expression} "
        "(default: $MLCDSEG_PROMPT_TEMPLATE or the model card's question)",
    )
    if engine:
        parser.add_argument(
            "--engine",
            choices=ENGINE_CHOICES,
            help="native: our engine (each image encoded once, expressions batched); official: the "
            "model card's remote code, one call per expression; auto: native when it can reproduce "
            "the checkpoint, else official with a warning (default: $MLCDSEG_ENGINE or auto)",
        )
    parser.add_argument(
        "--force-seg",
        action="store_true",
        default=None,
        help="always return a mask, never 'no target' (MLCD-Seg's benchmark mode; default: $MLCDSEG_FORCE_SEG)",
    )


def model_settings(arguments: argparse.Namespace) -> ModelSettings:
    """The environment's model settings with the options given on the command line applied.

    SettingsError (one line, naming the variable) for a value that cannot be used.
    """
    return ModelSettings.from_env().with_overrides(
        model=arguments.model,
        revision=arguments.revision,
        device=arguments.device,
        dtype=arguments.dtype,
        prompt_template=arguments.prompt_template,
        force_seg=arguments.force_seg,
        engine=getattr(arguments, "engine", None),
    )


def _prompt_template(template: str) -> str:
    """argparse type: a template containing {expression}."""
    try:
        return check_prompt_template(template)
    except PromptTemplateError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
