"""What a Label Studio labeling config asks of mlcdseg: which image, which expression, which masks."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from label_studio_sdk.label_interface import LabelInterface

from mlcdseg.errors import LabelConfigError

MaskKind = Literal["brush", "polygon"]

#: Control tags that can hold a mask, and the region kind mlcdseg produces for each.
MASK_CONTROL_KINDS: dict[str, MaskKind] = {"BrushLabels": "brush", "PolygonLabels": "polygon"}
#: Task data field read for the expression when the config shows none with a <Text> tag.
DEFAULT_EXPRESSION_FIELD = "expression"


@dataclass(frozen=True)
class MaskControl:
    """A mask-capable control tag: its name, region kind, target image tag and label values."""

    name: str
    kind: MaskKind
    to_name: str
    labels: tuple[str, ...]

    @property
    def region_type(self) -> str:
        """The Label Studio result type of this control's regions, e.g. "brushlabels"."""
        return f"{self.kind}labels"


@dataclass(frozen=True)
class LabelingSetup:
    """The parts of a labeling config that prediction and evaluation need."""

    image_name: str
    image_field: str
    expression_field: str
    prompt_controls: tuple[str, ...]
    mask_controls: tuple[MaskControl, ...]
    control_names: frozenset[str]

    def mask_control(self, name: str | None = None) -> MaskControl:
        """The mask control called `name`, or the first one when no name is given."""
        if name is None:
            return self.mask_controls[0]
        for control in self.mask_controls:
            if control.name == name:
                return control
        known = ", ".join(control.name for control in self.mask_controls)
        raise LabelConfigError(f"no mask control named {name!r} in the labeling config (it has: {known})")


def parse_label_config(xml: str) -> LabelingSetup:
    """Read a labeling config; LabelConfigError when it has no Image or no mask-capable control."""
    try:
        interface = LabelInterface(xml)
    except Exception as error:  # the SDK raises assorted parser errors for broken XML
        raise LabelConfigError(f"the labeling config is not valid XML: {error}") from error
    images = {tag.name: tag for tag in interface.objects if tag.tag == "Image"}
    if not images:
        raise LabelConfigError("the labeling config has no <Image> tag")
    mask_controls = tuple(
        MaskControl(
            name=control.name,
            kind=MASK_CONTROL_KINDS[control.tag],
            to_name=control.to_name[0],
            labels=tuple(control.labels or ()),
        )
        for control in interface.controls
        if control.tag in MASK_CONTROL_KINDS and control.to_name and control.to_name[0] in images
    )
    if not mask_controls:
        raise LabelConfigError(
            "the labeling config has no <BrushLabels> or <PolygonLabels> control on an <Image>"
        )
    image = images[mask_controls[0].to_name]
    text_fields = [tag.value_name for tag in interface.objects if tag.tag == "Text" and tag.value_name]
    return LabelingSetup(
        image_name=image.name,
        image_field=image.value_name,
        expression_field=text_fields[0] if text_fields else DEFAULT_EXPRESSION_FIELD,
        prompt_controls=tuple(c.name for c in interface.controls if c.tag == "TextArea"),
        mask_controls=mask_controls,
        control_names=frozenset(control.name for control in interface.controls),
    )


def choose_label(control: MaskControl, expression: str) -> str | None:
    """The first of the control's labels named as a word in the expression, else its first label.

    None when the control declares no label at all.
    """
    for label in control.labels:
        if re.search(rf"\b{re.escape(label)}\b", expression, flags=re.IGNORECASE):
            return label
    return control.labels[0] if control.labels else None
