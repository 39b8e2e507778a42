"""An ImageFolder that would never finish or would exhaust memory is refused in one sentence: a symbolic link
loop, a decompression bomb (an image whose header claims more pixels than PIL's limit)."""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import pytest
from PIL import Image

from focus_core.errors import FocusError
from focus_core.image_folder import load_image_folder
from tests.focus_core.test_data import write_images


def _png_claiming(path: Path, width: int, height: int) -> None:
    """A valid 1-bit greyscale PNG of ``width`` x ``height`` whose file is a few hundred bytes (one zlib stream)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = b"\0" + b"\0" * ((width + 7) // 8)  # filter byte + packed pixels
    compressor = zlib.compressobj(9)
    data = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0))
                     + chunk(b"IDAT", data) + chunk(b"IEND", b""))


def test_a_symlink_loop_is_refused_in_one_sentence_at_once(tmp_path: Path) -> None:
    root = tmp_path / "data"
    write_images(root, {"cat": 3, "dog": 3})
    os.symlink(root / "cat", root / "cat" / "again")  # cat/again/again/... for ever
    with pytest.raises(FocusError, match=r"'.*cat/again' is reached twice through symbolic links.*remove the link") as e:
        load_image_folder(root, tile_size=8, resize=8)  # at the first repeat: the message names cat/again, once
    assert "\n" not in str(e.value) and "again/again" not in str(e.value)


def test_a_link_to_a_folder_outside_the_class_is_followed(tmp_path: Path) -> None:
    root, elsewhere = tmp_path / "data", tmp_path / "more-cats"
    write_images(root, {"cat": 2, "dog": 2})
    write_images(elsewhere, {"x": 2})
    os.symlink(elsewhere / "x", root / "cat" / "extra")
    assert len(load_image_folder(root, tile_size=8, resize=8)) == 6


@pytest.mark.parametrize("side", [20_000, 14_000], ids=["over-twice-the-limit", "over-the-limit"])
def test_a_decompression_bomb_is_refused_in_one_sentence(tmp_path: Path, side: int) -> None:
    """20000² pixels: PIL raises its own error; 14000²: PIL only warns, and the image is still refused."""
    root = tmp_path / "data"
    write_images(root, {"cat": 2, "dog": 2})
    bomb = root / "cat" / "bomb.png"
    _png_claiming(bomb, side, side)
    assert bomb.stat().st_size < 100_000
    with pytest.raises(FocusError, match=r"'.*bomb.png' claims more than [\d,]+ pixels.*shrink it") as e:
        load_image_folder(root, tile_size=8, resize=8)
    assert "\n" not in str(e.value)
