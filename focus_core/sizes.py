"""How an ImageFolder's images become tiles: the default resize for a tile size, and when to warn about it.

An image's shorter side is resized to ``resize`` pixels and the centre ``tile_size`` square is cropped. The
default resize is 8/7 of the tile size (:func:`default_resize`: 256 for the paper's 224-pixel tiles, timm's
``crop_pct`` of 0.875) for every architecture, so the crop keeps the centre (7/8)² ≈ 77% of each resized square
whatever the tile size. :func:`size_warning` is the one line a loader prints when resizing upscales images
(their detail is invented, not seen) or the crop keeps less than :data:`MIN_CROP_SHARE` of the resized square.

Plain Python, no torch: the command line and the flows' specs use it before anything heavy is imported.

Examples
--------
>>> default_resize(224), default_resize(64), default_resize(32)
(256, 73, 36)
>>> round(crop_share(64, 256), 4)
0.0625
>>> print(size_warning(64, 256, smallest_side=64, upscaled=240, images=240))  # doctest: +NORMALIZE_WHITESPACE
Resizing to 256 px upscales 240 of 240 images (the smallest side is 64 px: 4.0x) and the 64 px centre crop
keeps 6% of each resized image's centre square: pass --resize 64.
>>> size_warning(224, 256, smallest_side=300, upscaled=0, images=10) is None
True
"""

from __future__ import annotations

__all__ = ["MIN_CROP_SHARE", "crop_share", "default_resize", "size_warning"]

#: Below this share of the resized square kept by the centre crop, a loader warns (about half of the image).
MIN_CROP_SHARE = 0.5


def default_resize(tile_size: int) -> int:
    """The shorter side images are resized to before the centre crop of ``tile_size``: ``tile_size * 8 // 7``.

    Examples
    --------
    >>> default_resize(224)
    256
    """
    return int(tile_size) * 8 // 7


def crop_share(tile_size: int, resize: int) -> float:
    """The share of a resized image's centre square (``resize`` x ``resize``) that the ``tile_size`` crop keeps."""
    return (int(tile_size) / int(resize)) ** 2


def size_warning(tile_size: int, resize: int, *, smallest_side: int | None, upscaled: int, images: int) -> str | None:
    """One line when resizing upscales images or the crop keeps less than :data:`MIN_CROP_SHARE`; else ``None``.

    Parameters
    ----------
    tile_size, resize
        The centre crop and the shorter side before it.
    smallest_side : int or None
        The smallest shorter side among the images (``None``: not known, only the crop is judged).
    upscaled : int
        How many images have a shorter side below ``resize``.
    images : int
        How many images there are.
    """
    share = crop_share(tile_size, resize)
    small = bool(upscaled and smallest_side)
    parts = []
    if small:
        parts.append(f"resizing to {resize} px upscales {upscaled} of {images} images (the smallest side is "
                     f"{smallest_side} px: {resize / smallest_side:.1f}x)")
    if share < MIN_CROP_SHARE:
        parts.append(f"the {tile_size} px centre crop keeps {share:.0%} of each resized image's centre square")
    if not parts:
        return None
    if small and smallest_side < tile_size:  # type: ignore[operator]
        fix = f"a tile no larger than the images, --tile-size {smallest_side} --resize {smallest_side}"
    else:
        better = min(default_resize(tile_size), smallest_side) if small else default_resize(tile_size)
        fix = f"--resize {better}" + (" (8/7 of the tile size)" if better == default_resize(tile_size) else "")
    sentence = " and ".join(parts)
    return f"{sentence[0].upper()}{sentence[1:]}: pass {fix}."
