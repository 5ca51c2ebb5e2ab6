"""Decoding any image file into the 48x48 grayscale uint8 array that FER2013 uses."""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ferstudy.core.errors import FerError

FER_SIZE = 48
#: Largest image (in pixels) that is decoded at all; larger ones are refused, not decoded.
MAX_IMAGE_PIXELS = 40_000_000


def open_image(data: bytes, name: str, *, max_pixels: int = MAX_IMAGE_PIXELS) -> Image.Image:
    """Decode image bytes with Pillow; the first frame of an animation; EXIF orientation applied.

    Raises FerError naming ``name`` for empty, truncated, non-image or oversized input.
    """
    if not data:
        raise FerError(f"{name}: empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            if img.width * img.height > max_pixels:
                raise FerError(
                    f"{name}: image of {img.width}x{img.height} pixels is larger than the "
                    f"limit of {max_pixels} pixels"
                )
            img.seek(0)
            img.load()
            return ImageOps.exif_transpose(img)
    except FerError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise FerError(
            f"{name}: image larger than the limit of {max_pixels} pixels (decompression bomb guard)"
        ) from None
    except UnidentifiedImageError:
        raise FerError(f"{name}: not a readable image") from None
    except (OSError, ValueError, SyntaxError) as err:
        raise FerError(f"{name}: damaged or truncated image ({err})") from None


def on_white(img: Image.Image) -> Image.Image:
    """An image with transparency composited onto white; other images unchanged."""
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, img.convert("RGBA"))
    return img


def to_grayscale(img: Image.Image) -> np.ndarray:
    """Return the image as a 2-D uint8 grayscale array (16-bit, CMYK, alpha handled)."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") or arr.max(initial=0) > 255 else 255.0
        return np.clip(np.rint(arr * (255.0 / top)), 0, 255).astype(np.uint8)
    return np.asarray(on_white(img).convert("L"), dtype=np.uint8)


def to_fer48(gray: np.ndarray) -> np.ndarray:
    """Resize a 2-D uint8 array to 48x48 (area resampling), as FER2013's crops are."""
    if gray.shape == (FER_SIZE, FER_SIZE):
        return gray
    img = Image.fromarray(gray, mode="L").resize((FER_SIZE, FER_SIZE), Image.Resampling.BOX)
    return np.asarray(img, dtype=np.uint8)


def decode_fer48(
    data: bytes, name: str, *, max_pixels: int = MAX_IMAGE_PIXELS
) -> tuple[np.ndarray, bool]:
    """Decode bytes into a 48x48 grayscale array; also say whether a conversion was needed."""
    img = open_image(data, name, max_pixels=max_pixels)
    converted = img.mode != "L" or img.size != (FER_SIZE, FER_SIZE)
    return to_fer48(to_grayscale(img)), converted
