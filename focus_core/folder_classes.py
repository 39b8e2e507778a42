"""An ImageFolder's layout: its split folders and class names, read from the directory listing alone.

No image is opened and nothing heavy is imported (no torch, numpy or PIL), so the command line counts a folder's
classes before anything starts; :mod:`focus_core.image_folder` lists and decodes the images through the same
functions.

Examples
--------
>>> import tempfile
>>> from pathlib import Path
>>> tmp = tempfile.TemporaryDirectory()
>>> root = Path(tmp.name)
>>> for split, name in [("train", "cat"), ("train", "dog"), ("test", "cat"), ("test", "owl")]:
...     (root / split / name).mkdir(parents=True)
>>> class_names(root)
['cat', 'dog', 'owl']
>>> tmp.cleanup()
"""

from __future__ import annotations

from pathlib import Path

from focus_core.errors import FocusError

__all__ = ["class_folders", "class_names", "split_folders"]


def class_folders(folder: Path) -> list[Path]:
    """The sub-folders of ``folder`` that are not hidden, sorted: one per class."""
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def split_folders(root: Path) -> list[tuple[str | None, Path]]:
    """``(split, folder)`` pairs whose sub-folders are classes: ``train/`` with ``val/`` (or ``valid/``) and
    ``test/`` where they are given, else ``(None, root)`` for a seeded split.

    Raises
    ------
    FocusError
        For both ``val/`` and ``valid/``, or a ``train/`` folder without a held-out one.
    """
    names = {p.name for p in class_folders(root)}
    held_out = [s for s in ("val", "valid", "test") if s in names]
    if "val" in names and "valid" in names:
        raise FocusError(f"The folder '{root}' has both val/ and valid/: keep only one of them.")
    if "train" in names and not held_out:
        raise FocusError(
            f"The folder '{root}' has a train/ folder but no val/, valid/ or test/ folder: add one, "
            f"or point root at '{root / 'train'}' for a seeded split."
        )
    if "train" in names:
        return [("train", root / "train")] + [("val" if s == "valid" else s, root / s) for s in held_out]
    return [(None, root)]


def class_names(root: str | Path) -> list[str]:
    """The sorted class names of the ImageFolder at ``root`` (the labels are their indices), over every split.

    A class folder counts here whatever it holds; :func:`focus_core.image_folder.load_image_folder` refuses one
    with fewer than two images.
    """
    root = Path(root)
    return sorted({folder.name for _, split in split_folders(root) for folder in class_folders(split)})
