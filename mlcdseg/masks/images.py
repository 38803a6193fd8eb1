"""Decode images the way Label Studio shows them: EXIF orientation applied, 8-bit RGB out.

Masks are made and compared at the size of the image returned here, so a phone photo stored
landscape with EXIF orientation 6 yields a portrait image and portrait masks, as the annotator
sees it in Label Studio (browsers apply EXIF orientation).

Mode conversion to 8-bit RGB:
- RGBA / LA / PA / P with transparency / RGBa: alpha-composited over white, which is what a
  browser page shows; dropping alpha would expose the arbitrary colours stored under
  fully transparent pixels.
- 16-bit grey (I;16, I;16B, I;16L, I;16N, and mode I holding values in 0..65535, which is how
  some decoders give 16-bit PNGs): scaled by 255/65535 — what a browser shows, never clipped.
- Mode I with values outside 0..65535, and mode F: stretched linearly from their min..max to
  0..255 (a constant image becomes black; NaN becomes 0).
- Everything else (1, L, P, CMYK, YCbCr, RGBX, …) through Pillow's own conversion.
Multi-frame files (GIF, TIFF) give their first frame.
"""

import io
import logging
import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from mlcdseg.errors import ImageDecodeError

logger = logging.getLogger(__name__)

#: Default pixel limit (width × height) above which an image is refused as a decompression bomb.
DEFAULT_MAX_PIXELS = Image.MAX_IMAGE_PIXELS or 89_478_485

ImageSource = str | os.PathLike | bytes | bytearray | memoryview | Image.Image

_SIXTEEN_BIT_MODES = {"I;16", "I;16B", "I;16L", "I;16N"}
_ALPHA_MODES = {"RGBA", "LA", "PA", "RGBa", "La"}
_WHITE = (255, 255, 255)
#: Marks, in `Image.info`, an image that load_image made: 8-bit RGB with its EXIF orientation
#: applied. Decoding such an image again (the backend's fetcher decodes, then the segmenter
#: is handed the result) returns it as it is: one normalisation per image on the predict path.
_DISPLAY_RGB_MARK = "mlcdseg.display_rgb"


def load_image(source: ImageSource, *, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Decode `source` (path, encoded bytes or PIL image) to an 8-bit RGB PIL image, EXIF-rotated.

    Raises ImageDecodeError, naming the source, for a missing or unreadable file, bytes that are
    not an image, a truncated image, an unsupported mode, or more than `max_pixels` pixels
    (None: no limit of ours; Pillow's own Image.MAX_IMAGE_PIXELS guard still applies).
    A PIL image passed in is not modified; one that load_image itself returned comes back as
    it is (it is already display RGB), any other as a new image.
    """
    name = _describe(source)
    try:
        if isinstance(source, Image.Image):
            if source.mode == "RGB" and source.info.get(_DISPLAY_RGB_MARK):
                _check_pixel_count(source, name, max_pixels)
                return source
            return _to_display_rgb(source, name, max_pixels)
        stream = _open_stream(source)
        with stream, Image.open(stream) as image:
            return _to_display_rgb(image, name, max_pixels)
    except Image.DecompressionBombError as error:
        raise ImageDecodeError(
            f"{name} is refused as a possible decompression bomb: {error}"
        ) from None
    except FileNotFoundError:
        raise ImageDecodeError(f"{name} does not exist") from None
    except UnidentifiedImageError:
        raise ImageDecodeError(f"{name} is not an image format Pillow can read") from None
    except (OSError, ValueError, SyntaxError, EOFError) as error:
        # Pillow reports truncated or corrupt data as OSError, ValueError or SyntaxError.
        raise ImageDecodeError(f"cannot decode {name}: {error}") from None


def mask_image(mask: np.ndarray) -> Image.Image:
    """8-bit grey PIL image of a bool mask (H, W): 255 where True, 0 elsewhere."""
    return Image.fromarray(np.where(mask, 255, 0).astype(np.uint8), mode="L")


def mask_outline(mask: np.ndarray, thickness: int = 1) -> np.ndarray:
    """The boundary of a bool (H, W) mask as a bool (H, W) array, `thickness` pixels wide, inside the mask.

    A masked pixel is on the boundary when it lies within `thickness` 4-neighbour steps of an
    unmasked pixel or of the image's edge.
    """
    interior = mask.astype(bool)
    for _ in range(thickness):
        padded = np.pad(interior, 1, constant_values=False)
        interior = (
            padded[1:-1, 1:-1] & padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
        )
    return mask & ~interior


def overlay_mask(
    image: Image.Image,
    mask: np.ndarray,
    colour: tuple[int, int, int] = (30, 144, 255),
    opacity: float = 0.55,
) -> Image.Image:
    """RGB picture of `mask` (bool (H, W) at the image's size) over `image` for a person to check.

    Masked pixels are blended with `colour` at `opacity`; the rest is dimmed so the mask stands
    out whatever the image's own colours.
    """
    rgb = np.asarray(image.convert("RGB"), dtype=np.float32)
    if mask.shape != rgb.shape[:2]:
        raise ValueError(f"mask shape {mask.shape} does not match image size {rgb.shape[:2]}")
    tint = np.array(colour, dtype=np.float32)
    blended = np.where(mask[..., None], rgb * (1 - opacity) + tint * opacity, rgb * 0.45)
    return Image.fromarray(np.rint(blended).astype(np.uint8), mode="RGB")


def _describe(source: ImageSource) -> str:
    """How error messages name the source."""
    if isinstance(source, Image.Image):
        return f"the {source.mode} image {source.width}×{source.height}"
    if isinstance(source, (bytes, bytearray, memoryview)):
        return f"the image bytes ({len(source)} bytes)"
    return f"image file {os.fspath(source)!r}"


def _open_stream(source: str | os.PathLike | bytes | bytearray | memoryview) -> io.IOBase:
    """A binary stream over the encoded image."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return io.BytesIO(source)
    path = Path(source).expanduser()
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a directory")
    return path.open("rb")


def _to_display_rgb(image: Image.Image, name: str, max_pixels: int | None) -> Image.Image:
    """Check the size, decode, apply EXIF orientation and convert to 8-bit RGB (new, marked image)."""
    _check_pixel_count(image, name, max_pixels)
    image.load()
    # exif_transpose returns a new image (turned, or a plain copy), so the caller's is never changed.
    rgb = _convert_to_rgb(ImageOps.exif_transpose(image), name)
    rgb.info[_DISPLAY_RGB_MARK] = True
    return rgb


def _check_pixel_count(image: Image.Image, name: str, max_pixels: int | None) -> None:
    """ImageDecodeError when `image` has more than `max_pixels` pixels (None: no limit)."""
    width, height = image.size
    if max_pixels is not None and width * height > max_pixels:
        raise ImageDecodeError(
            f"{name} has {width}×{height} = {width * height} pixels, over the limit of "
            f"{max_pixels} (a guard against decompression bombs); raise max_pixels to accept it"
        )


def _convert_to_rgb(image: Image.Image, name: str) -> Image.Image:
    """`image` as 8-bit RGB following the module's mode rules: itself when already RGB, else a new image."""
    if image.mode == "RGB":
        return image
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in _ALPHA_MODES:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, _WHITE + (255,))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if image.mode in _SIXTEEN_BIT_MODES or image.mode in ("I", "F"):
        return Image.fromarray(_grey_to_uint8(np.asarray(image), image.mode), mode="L").convert(
            "RGB"
        )
    try:
        return image.convert("RGB")
    except ValueError:
        raise ImageDecodeError(
            f"{name} has image mode {image.mode}, which mlcdseg cannot convert to RGB"
        ) from None


def _grey_to_uint8(values: np.ndarray, mode: str) -> np.ndarray:
    """Scale 16-bit, 32-bit integer or float grey values (H, W) to uint8 (H, W) without clipping."""
    values = values.astype(np.float64)
    values[~np.isfinite(values)] = 0.0
    if values.size == 0:
        return np.zeros(values.shape, dtype=np.uint8)
    low, high = values.min(), values.max()
    if mode in _SIXTEEN_BIT_MODES or (mode == "I" and low >= 0 and high <= 65535):
        return np.rint(values * (255 / 65535)).astype(np.uint8)
    if high == low:
        return np.zeros(values.shape, dtype=np.uint8)
    return np.rint((values - low) * (255 / (high - low))).astype(np.uint8)
