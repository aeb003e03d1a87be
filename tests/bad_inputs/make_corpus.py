"""Regenerate the image and array files of this corpus, byte for byte:
``python tests/bad_inputs/make_corpus.py``.

They are made from scratch here (tiny synthetic images), and the TOML, CSV and JSON files are
written by hand, so the corpus has no third-party content. ``cases.toml`` says how each file is fed
to the CLI and what the error must name.
"""

from __future__ import annotations

import io
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).parent


def png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def jpeg_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_raw(width: int, height: int, bit_depth: int, colour_type: int, rows: bytes, extra: bytes = b"") -> bytes:
    """A PNG built chunk by chunk (so headers can say what the data is not)."""
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + extra + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def gradient(mode: str = "RGB", size: int = 16) -> Image.Image:
    y, x = np.mgrid[0:size, 0:size]
    grey = ((x + y) * (255 // (2 * size - 2))).astype(np.uint8)
    return Image.fromarray(grey if mode == "L" else np.stack([grey, 255 - grey, grey // 2], axis=-1))


def tiff_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="TIFF")
    return buf.getvalue()


def files() -> dict[str, bytes]:
    png = png_bytes(gradient())
    jpg = jpeg_bytes(gradient())
    deep = png_bytes(Image.fromarray((np.arange(256, dtype=np.uint16).reshape(16, 16) * 257)))
    palette = gradient().convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    pal_png = png_bytes(palette)
    out: dict[str, bytes] = {}
    # --- images (fed inside an image folder beside good images) ---
    out["image_png_truncated.png"] = png[: len(png) // 2]
    out["image_png_header_only.png"] = png[:8]
    crc = bytearray(png)
    crc[20] ^= 0xFF  # a byte of IHDR's width: the chunk's CRC no longer matches
    out["image_png_bad_crc.png"] = bytes(crc)
    out["image_png_corrupt_idat.png"] = png_raw(16, 16, 8, 2, b"")[:33] + chunk(b"IDAT", b"\x78\x9c" + bytes(range(7, 90))) + chunk(b"IEND", b"")
    out["image_png_zero_width.png"] = png_raw(0, 16, 8, 0, b"")
    out["image_png_huge_dims.png"] = png_raw(60_000, 60_000, 8, 0, b"\x00" * 61)
    out["image_png_over_limit.png"] = png_raw(12_000, 8_000, 1, 0, b"\x00" * 64)
    out["image_png_long_strip.png"] = png_raw(100_000_000, 1, 1, 0, b"\x00" * 64)  # 4 KB, 100 MP in one row
    out["image_png_wrong_channels.png"] = png_raw(16, 16, 8, 5, b"\x00" * (16 * 16 + 16))  # colour type 5 does not exist
    out["image_png16_truncated.png"] = deep[: len(deep) * 2 // 3]
    no_plte = pal_png.replace(pal_png[pal_png.index(b"PLTE") - 4: pal_png.index(b"PLTE") + 8 + len(palette.getpalette()[:48])], b"")
    out["image_palette_no_plte.png"] = no_plte
    out["image_palette_truncated.png"] = pal_png[: len(pal_png) // 2]
    out["image_jpeg_truncated.jpg"] = jpg[: len(jpg) // 2]
    out["image_jpeg_no_soi.jpg"] = jpg[2:]
    sof = jpg.index(b"\xff\xc0")
    out["image_jpeg_zero_height.jpg"] = jpg[: sof + 5] + b"\x00\x00" + jpg[sof + 7:]
    out["image_jpeg_header_only.jpeg"] = jpg[:20]
    dht = jpg.index(b"\xff\xc4")
    bad_dht = bytearray(jpg)
    bad_dht[dht + 5: dht + 21] = b"\xff" * 16  # Huffman code counts that overflow the code space
    out["image_jpeg_bad_huffman.jpg"] = bytes(bad_dht)
    out["image_empty.png"] = b""
    out["image_empty.jpg"] = b""
    out["image_text_named.png"] = b"hello, this is a text file\n"
    out["image_html_named.jpg"] = b"<!DOCTYPE html><html><head><title>404 Not Found</title></head><body>Not Found</body></html>\n"
    out["image_pdf_named.png"] = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"
    zbuf = io.BytesIO()
    with zipfile.ZipFile(zbuf, "w") as z:
        z.writestr(zipfile.ZipInfo("readme.txt", date_time=(2026, 1, 1, 0, 0, 0)), "an archive, not an image")
    out["image_zip_named.png"] = zbuf.getvalue()
    gif = io.BytesIO()
    gradient("L").save(gif, format="GIF")
    out["image_gif_truncated.gif"] = gif.getvalue()[: len(gif.getvalue()) // 2]
    bmp = io.BytesIO()
    gradient().save(bmp, format="BMP")
    out["image_bmp_truncated.bmp"] = bmp.getvalue()[: len(bmp.getvalue()) // 2]
    out["image_webp_garbage.webp"] = b"RIFF\x20\x00\x00\x00WEBPVP8 " + bytes(range(24))
    tif = tiff_bytes(gradient())
    out["image_tiff_truncated.tif"] = tif[: len(tif) // 3]
    # --- arrays (fed as --dataset FILE) ---
    def npy(array) -> bytes:
        buf = io.BytesIO()
        np.save(buf, array, allow_pickle=True)
        return buf.getvalue()
    out["array_five_channels.npy"] = npy(np.zeros((4, 5, 8, 8), dtype=np.uint8))
    out["array_two_channels_last.npy"] = npy(np.zeros((4, 8, 8, 2), dtype=np.uint8))
    out["array_nan.npy"] = npy(np.full((4, 8, 8), np.nan, dtype=np.float32))
    out["array_strings.npy"] = npy(np.array([["a"] * 8] * 8))
    out["array_pickled_objects.npy"] = npy(np.array([{"image": 1}, None], dtype=object))
    out["array_out_of_range.npy"] = npy(np.linspace(0, 1000, 4 * 64, dtype=np.float32).reshape(4, 8, 8))
    out["array_no_images.npy"] = npy(np.zeros((0, 8, 8), dtype=np.uint8))
    out["array_truncated.npy"] = npy(np.zeros((4, 8, 8), dtype=np.uint8))[:100]
    out["array_empty.npz"] = b""
    out.update(arrays_of_every_class())
    out.update(configs_too_big_to_write_by_hand())
    return out


def npy_header_only(shape: tuple[int, ...], descr: str, data: bytes) -> bytes:
    """A ``.npy`` whose header declares ``shape`` and ``descr`` but whose data is ``data``."""
    from numpy.lib import format as npy_format

    buf = io.BytesIO()
    npy_format.write_array_header_1_0(buf, {"descr": descr, "fortran_order": False, "shape": shape})
    return buf.getvalue() + data


def npz(**arrays) -> bytes:
    """An ``.npz`` with fixed timestamps (byte for byte reproducible)."""
    zbuf = io.BytesIO()
    with zipfile.ZipFile(zbuf, "w") as z:
        for name, array in arrays.items():
            data = array if isinstance(array, bytes) else _npy(array)
            z.writestr(zipfile.ZipInfo(name, date_time=(2026, 1, 1, 0, 0, 0)), data)
    return zbuf.getvalue()


def _npy(array) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=True)
    return buf.getvalue()


def arrays_of_every_class() -> dict[str, bytes]:
    """Arrays with empty axes, the wrong kind of numbers, too many axes, or headers that lie."""
    out = {}
    out["array_zero_height.npy"] = _npy(np.zeros((10, 0, 8), dtype=np.uint8))
    out["array_zero_width.npy"] = _npy(np.zeros((10, 8, 0), dtype=np.uint8))
    out["array_zero_channels_last.npy"] = _npy(np.zeros((10, 8, 8, 0), dtype=np.uint8))
    out["array_complex.npy"] = _npy(np.full((4, 8, 8), 0.5 + 0.5j, dtype=np.complex64))
    out["array_five_axes.npy"] = _npy(np.zeros((2, 4, 1, 8, 8), dtype=np.uint8))
    out["array_structured.npy"] = _npy(np.zeros((4, 8, 8), dtype=[("r", "u1"), ("g", "u1")]))
    out["array_datetimes.npy"] = _npy(np.zeros((4, 8, 8), dtype="datetime64[s]"))
    out["array_header_overclaims.npy"] = npy_header_only((10**12, 8, 8), "|u1", bytes(100))  # 64 TB declared
    out["array_header_one_short.npy"] = npy_header_only((4, 8, 8), "<f4", bytes(4 * 8 * 8 * 4 - 4))
    out["array_npz_pickled_objects.npz"] = npz(**{"images.npy": np.array([{"image": 1}, None], dtype=object)})
    out["array_npz_overclaims.npz"] = npz(**{"images.npy": npy_header_only((10**9, 64, 64), "<f8", bytes(64))})
    out["array_npz_not_an_array.npz"] = npz(**{"readme.txt": b"images are in another file"})
    out["array_npz_no_arrays.npz"] = npz()
    out["array_one_pixel_wide_infinite.npy"] = _npy(np.array([[[np.inf]]], dtype=np.float16))
    return out


def configs_too_big_to_write_by_hand() -> dict[str, bytes]:
    """TOML files nested 10,000 deep or holding a 100,000-character string."""
    return {
        "config_deep_array.toml": b"[run]\nmax_steps = " + b"[" * 10_000 + b"]" * 10_000 + b"\n",
        "config_deep_inline_table.toml": b"run = " + b"{a = " * 5_000 + b"1" + b"}" * 5_000 + b"\n",
        "config_long_string.toml": b'[data]\ndataset = "' + b"x" * 100_000 + b'"\n',
    }


def main() -> None:
    for name, data in files().items():
        (HERE / name).write_bytes(data)
    print(f"wrote {len(files())} files to {HERE}")


if __name__ == "__main__":
    main()
