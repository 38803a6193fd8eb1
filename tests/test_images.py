"""load_image: EXIF orientation as Label Studio shows it, every mode to 8-bit RGB, clear errors."""

import io

import numpy as np
import pytest
from PIL import Image

from mlcdseg.errors import ImageDecodeError
from mlcdseg.masks.images import load_image, mask_image, mask_outline, overlay_mask

RED = (255, 0, 0)
GREY = (128, 128, 128)
ORIENTATION_TAG = 0x0112


def _encode(image: Image.Image, image_format: str, **options) -> bytes:
    """The image encoded in memory."""
    stream = io.BytesIO()
    image.save(stream, format=image_format, **options)
    return stream.getvalue()


def _landscape_with_red_top_left() -> Image.Image:
    """A 60×30 grey image, red in its top-left 10×10 corner."""
    image = Image.new("RGB", (60, 30), GREY)
    image.paste(RED, (0, 0, 10, 10))
    return image


def _exif_jpeg(image: Image.Image, orientation: int) -> bytes:
    """JPEG bytes of `image` with the given EXIF orientation tag."""
    exif = Image.Exif()
    exif[ORIENTATION_TAG] = orientation
    return _encode(image, "JPEG", quality=95, exif=exif.tobytes())


def _red_pixels(image: Image.Image) -> np.ndarray:
    """Bool (H, W): pixels close to pure red."""
    rgb = np.asarray(image).astype(int)
    return (rgb[..., 0] > 200) & (rgb[..., 1] < 60) & (rgb[..., 2] < 60)


def test_rgb_file_bytes_and_pil_image_decode_to_the_same_pixels(tmp_path):
    original = _landscape_with_red_top_left()
    path = tmp_path / "photo.png"
    original.save(path)
    from_path = load_image(path)
    from_string = load_image(str(path))
    from_bytes = load_image(path.read_bytes())
    from_pil = load_image(original)
    for decoded in (from_path, from_string, from_bytes, from_pil):
        assert decoded.mode == "RGB"
        assert decoded.size == (60, 30)
        assert np.array_equal(np.asarray(decoded), np.asarray(original))


@pytest.mark.parametrize(
    "orientation, red_corner",
    [
        (6, "top-right"),  # stored image is rotated 90° clockwise for display
        (8, "bottom-left"),  # stored image is rotated 90° counter-clockwise for display
        (3, "bottom-right"),  # 180°
        (1, "top-left"),  # as stored
    ],
)
def test_exif_orientation_is_applied_as_a_browser_shows_it(orientation, red_corner, tmp_path):
    path = tmp_path / "phone.jpg"
    path.write_bytes(_exif_jpeg(_landscape_with_red_top_left(), orientation))
    decoded = load_image(path)
    expected_size = (30, 60) if orientation in (6, 8) else (60, 30)
    assert decoded.size == expected_size
    red_rows, red_columns = np.nonzero(_red_pixels(decoded))
    height, width = decoded.height, decoded.width
    vertical = "top" if red_rows.mean() < height / 2 else "bottom"
    horizontal = "left" if red_columns.mean() < width / 2 else "right"
    assert f"{vertical}-{horizontal}" == red_corner
    assert 80 <= red_rows.size <= 120  # the 10×10 block, give or take JPEG edges


def test_decoding_an_oriented_image_again_does_not_rotate_it_twice(tmp_path):
    path = tmp_path / "phone.jpg"
    path.write_bytes(_exif_jpeg(_landscape_with_red_top_left(), 6))
    once = load_image(path)
    twice = load_image(once)
    assert twice.size == once.size == (30, 60)
    assert np.array_equal(np.asarray(twice), np.asarray(once))


def test_an_rgb_pil_image_comes_back_as_a_new_image_and_stays_untouched():
    original = _landscape_with_red_top_left()
    decoded = load_image(original)
    assert decoded is not original
    decoded.paste((0, 0, 255), (0, 0, 60, 30))
    assert original.getpixel((0, 0)) == RED and original.getpixel((59, 29)) == GREY


def test_rgba_is_composited_over_white_and_the_input_is_untouched():
    rgba = Image.new("RGBA", (3, 1))
    rgba.putdata([(0, 0, 0, 0), (255, 0, 0, 255), (0, 0, 255, 128)])
    decoded = load_image(rgba)
    assert rgba.mode == "RGBA"
    pixels = np.asarray(decoded).astype(int)
    assert pixels[0, 0].tolist() == [255, 255, 255]  # transparent black shows as white
    assert pixels[0, 1].tolist() == [255, 0, 0]
    assert np.abs(pixels[0, 2] - [127, 127, 255]).max() <= 1  # half blue over white


def test_la_and_palette_transparency_are_composited_over_white():
    grey_alpha = Image.new("LA", (2, 1))
    grey_alpha.putdata([(0, 0), (0, 255)])
    assert np.asarray(load_image(grey_alpha)).tolist() == [[[255, 255, 255], [0, 0, 0]]]

    palette = Image.new("P", (2, 1))
    palette.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    palette.putdata([0, 1])
    png = _encode(palette, "PNG", transparency=1)
    assert np.asarray(load_image(png)).tolist() == [[[255, 0, 0], [255, 255, 255]]]


def test_grey_and_palette_images_become_rgb():
    grey = Image.new("L", (2, 1))
    grey.putdata([10, 200])
    assert np.asarray(load_image(_encode(grey, "PNG"))).tolist() == [[[10] * 3, [200] * 3]]
    palette = Image.new("P", (2, 1))
    palette.putpalette([0, 0, 255, 0, 255, 0] + [0] * 762)
    palette.putdata([0, 1])
    assert np.asarray(load_image(_encode(palette, "GIF"))).tolist() == [[[0, 0, 255], [0, 255, 0]]]


def test_cmyk_tiff_becomes_rgb():
    cmyk = Image.new("CMYK", (2, 1))
    cmyk.putdata([(0, 255, 255, 0), (0, 0, 0, 255)])  # red, black
    decoded = load_image(_encode(cmyk, "TIFF"))
    assert np.asarray(decoded).tolist() == [[[255, 0, 0], [0, 0, 0]]]


def test_sixteen_bit_png_is_scaled_not_clipped():
    values = np.array([[0, 257, 32768, 65535]], dtype=np.uint16)
    png = _encode(Image.fromarray(values), "PNG")
    decoded = np.asarray(load_image(png))
    assert decoded[..., 0].tolist() == [[0, 1, 128, 255]]
    assert np.array_equal(decoded[..., 0], decoded[..., 2])


def test_32_bit_integer_in_16_bit_range_is_scaled_like_16_bit():
    values = np.array([[0, 32768, 65535]], dtype=np.int32)
    decoded = np.asarray(load_image(Image.fromarray(values, mode="I")))
    assert decoded[..., 0].tolist() == [[0, 128, 255]]


def test_float_and_wide_integer_images_are_stretched_to_their_range():
    floats = np.array([[-1.0, 0.0, 1.0, np.nan]], dtype=np.float32)
    decoded = np.asarray(load_image(Image.fromarray(floats, mode="F")))
    assert decoded[..., 0].tolist() == [[0, 128, 255, 128]]  # NaN counts as 0
    wide = np.array([[-100000, 0, 100000]], dtype=np.int32)
    assert np.asarray(load_image(Image.fromarray(wide, mode="I")))[..., 0].tolist() == [
        [0, 128, 255]
    ]
    constant = np.full((2, 2), 7.5, dtype=np.float32)
    assert not np.asarray(load_image(Image.fromarray(constant, mode="F"))).any()


def _truncated(image_format: str) -> bytes:
    """A noisy image encoded in `image_format`, cut in half."""
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    encoded = _encode(Image.fromarray(noise), image_format)
    return encoded[: len(encoded) // 2]


@pytest.mark.parametrize(
    "data, message",
    [
        (bytes(np.random.default_rng(1).integers(0, 256, 500, dtype=np.uint8)), "not an image"),
        (b"just some text, not an image\n", "not an image"),
        (b"", "not an image"),
        (_truncated("PNG"), "cannot decode"),
        (_truncated("JPEG"), "cannot decode"),
    ],
    ids=["random-bytes", "text", "empty", "truncated-png", "truncated-jpeg"],
)
def test_undecodable_bytes_raise_image_decode_error(data, message):
    with pytest.raises(ImageDecodeError, match=message) as raised:
        load_image(data)
    assert f"{len(data)} bytes" in str(raised.value)


def test_undecodable_files_raise_image_decode_error_naming_the_file(tmp_path):
    text_file = tmp_path / "notes.txt"
    text_file.write_text("hello")
    truncated = tmp_path / "cut.png"
    truncated.write_bytes(_truncated("PNG"))
    for path, reason in [
        (text_file, "not an image"),
        (truncated, "cannot decode"),
        (tmp_path / "missing.png", "does not exist"),
        (tmp_path, "directory"),
    ]:
        with pytest.raises(ImageDecodeError, match=reason) as raised:
            load_image(path)
        assert path.name in str(raised.value)


def test_images_over_the_pixel_limit_are_refused_before_decoding():
    png = _encode(Image.new("RGB", (20, 20)), "PNG")
    with pytest.raises(ImageDecodeError, match=r"20×20 = 400 pixels, over the limit of 399"):
        load_image(png, max_pixels=399)
    assert load_image(png, max_pixels=400).size == (20, 20)


def test_pillow_decompression_bomb_error_becomes_image_decode_error(monkeypatch):
    png = _encode(Image.new("RGB", (20, 20)), "PNG")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 400 px is over twice Pillow's limit
    with pytest.raises(ImageDecodeError, match="decompression bomb"):
        load_image(png, max_pixels=None)


def test_mask_image_is_black_and_white_png_ready():
    mask = np.array([[True, False], [False, True]])
    image = mask_image(mask)
    assert image.mode == "L"
    assert np.asarray(image).tolist() == [[255, 0], [0, 255]]


def test_overlay_tints_the_mask_and_dims_the_rest():
    image = Image.new("RGB", (2, 1), (200, 200, 200))
    overlay = np.asarray(overlay_mask(image, np.array([[True, False]]), colour=(0, 0, 255)))
    inside, outside = overlay[0, 0].astype(int), overlay[0, 1].astype(int)
    assert inside[2] > inside[0]  # tinted blue
    assert (outside < 200).all() and outside[0] == outside[2]  # dimmed, not tinted
    with pytest.raises(ValueError, match="does not match"):
        overlay_mask(image, np.zeros((2, 2), dtype=bool))


def test_an_image_load_image_made_is_not_decoded_again_but_a_size_limit_still_applies(tmp_path):
    path = tmp_path / "phone.jpg"
    path.write_bytes(_exif_jpeg(_landscape_with_red_top_left(), 6))
    decoded = load_image(path)
    assert load_image(decoded) is decoded  # the backend fetches and decodes, the segmenter reuses
    with pytest.raises(ImageDecodeError, match="over the limit"):
        load_image(decoded, max_pixels=100)
    assert load_image(decoded.convert("L")) is not decoded


def test_mask_outline_is_the_masks_boundary_inside_it_at_the_given_thickness():
    mask = np.zeros((7, 7), dtype=bool)
    mask[1:6, 1:6] = True
    outline = mask_outline(mask)
    assert outline.sum() == 16 and not outline[3, 3] and outline[1, 3] and not (outline & ~mask).any()
    assert mask_outline(mask, thickness=2).sum() == 24  # everything but the centre pixel
    assert not mask_outline(np.zeros((3, 3), dtype=bool)).any()
