"""Reading labeling configs: the captured Label Studio config and our own."""

import json
import pytest

from mlcdseg.errors import LabelConfigError
from mlcdseg.labelstudio.label_config import choose_label, parse_label_config

POLYGON_CONFIG = """<View>
  <Image name="img" value="$photo"/>
  <Text name="phrase" value="$sentence"/>
  <PolygonLabels name="outline" toName="img">
    <Label value="traffic light"/><Label value="car"/>
  </PolygonLabels>
</View>"""


def test_captured_interactive_config_has_prompt_and_brush_control(fixtures_dir):
    config = json.loads((fixtures_dir / "request_setup.json").read_text())["schema"]
    setup = parse_label_config(config)
    assert setup.image_name == "image"
    assert setup.image_field == "image"
    assert setup.prompt_controls == ("prompt",)
    assert setup.expression_field == "expression"  # no <Text> tag: the default field
    (control,) = setup.mask_controls
    assert (control.name, control.kind, control.to_name) == ("mask", "brush", "image")
    assert control.labels == ("red", "blue")
    assert control.region_type == "brushlabels"


def test_polygon_config_reads_text_field_and_polygon_control():
    setup = parse_label_config(POLYGON_CONFIG)
    assert (setup.image_name, setup.image_field, setup.expression_field) == ("img", "photo", "sentence")
    assert setup.mask_control().kind == "polygon"
    assert setup.mask_control("outline").region_type == "polygonlabels"


def test_unknown_mask_control_name_is_reported_with_known_names():
    setup = parse_label_config(POLYGON_CONFIG)
    with pytest.raises(LabelConfigError, match="no mask control named 'nope'.*outline"):
        setup.mask_control("nope")


@pytest.mark.parametrize(
    "config, message",
    [
        ("<View><Text name='t' value='$x'/><Choices name='c' toName='t'><Choice value='a'/></Choices></View>", "no <Image>"),
        ("<View><Image name='i' value='$image'/><Choices name='c' toName='i'><Choice value='a'/></Choices></View>", "no <BrushLabels>"),
        ("<View><Image name='i' value='$image'", "not valid XML"),
    ],
)
def test_configs_without_what_we_need_are_refused(config, message):
    with pytest.raises(LabelConfigError, match=message):
        parse_label_config(config)


def test_label_named_in_expression_wins_over_first_label():
    control = parse_label_config(POLYGON_CONFIG).mask_control()
    assert choose_label(control, "the red car on the left") == "car"
    assert choose_label(control, "the Traffic Light above") == "traffic light"
    assert choose_label(control, "the carpet") == "traffic light"  # 'car' only as a whole word
    assert choose_label(control, "a dog") == "traffic light"
