#!/usr/bin/python3
"""Writes the seed corpus of the dataset fuzz target (tests/fuzz/fuzz_dataset.cpp) into
tests/fuzz/corpus_dataset/: one small valid file of every kind the readers take, each prefixed
with the selector byte that tells the target what file it is and which model the data is fitted
to (see the target's comment). Deterministic: the same files on every run.

    /usr/bin/python3 scripts/fuzz_dataset_seeds.py
"""
import gzip
import io
import json
import os
import struct
import zipfile

import numpy as np
import onnx.numpy_helper
from PIL import Image

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fuzz", "corpus_dataset")
# Model bits (selector bits 4-5): 0 none, 1 [1,28,28] float 10 classes, 2 [3,8,8] float 4 classes
# batch 1, 3 [-1,-1,3] uint8. Bit 6: limit 5.
NONE, GRAY28, RGB8, HWC_U8, LIMIT = 0x00, 0x10, 0x20, 0x30, 0x40


def npy(a):
    b = io.BytesIO()
    np.save(b, a, allow_pickle=False)
    return b.getvalue()


def npz(compressed, **arrays):
    b = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(b, **arrays)
    return b.getvalue()


def idx(a):
    code = {np.uint8: 0x08, np.int32: 0x0C, np.float32: 0x0D}[a.dtype.type]
    head = bytes([0, 0, code, a.ndim]) + b"".join(struct.pack(">I", d) for d in a.shape)
    return head + a.astype(a.dtype.newbyteorder(">")).tobytes()


def npy_v2(a):
    """The same array as format 2.0: a 4-byte header length."""
    v1 = npy(a)
    header_len = struct.unpack("<H", v1[8:10])[0]
    return b"\x93NUMPY\x02\x00" + struct.pack("<I", header_len) + v1[10:]


def save(im, fmt, **kw):
    b = io.BytesIO()
    im.save(b, fmt, **kw)
    return b.getvalue()


def image(arr, mode, fmt, **kw):
    return save(Image.fromarray(arr, mode), fmt, **kw)


def main():
    rng = np.random.default_rng(0)
    u8 = lambda *s: rng.integers(0, 256, size=s, dtype=np.uint8)
    seeds = {
        "npy_u8_nhw": (NONE, npy(u8(4, 6, 6))),
        "npy_u8_fmnist": (GRAY28 | LIMIT, npy(u8(7, 28, 28))),
        "npy_u8_nhwc": (HWC_U8, npy(u8(3, 5, 4, 3))),
        "npy_f32_nchw": (RGB8, npy(rng.standard_normal((4, 3, 8, 8)).astype(np.float32))),
        "npy_f32_fortran": (NONE, npy(np.asfortranarray(rng.standard_normal((2, 1, 3, 3)).astype(np.float32)))),
        "npy_f32_big_endian": (NONE, npy(rng.standard_normal((2, 1, 3, 3)).astype(">f4"))),
        "npy_v2": (NONE, npy_v2(u8(2, 3, 3))),
        "npz_stored": (NONE, npz(False, x=u8(4, 5, 5), labels=np.arange(4, dtype=np.int64))),
        "npz_deflated": (GRAY28, npz(True, x=u8(3, 28, 28))),
        "idx_plain": (NONE, idx(u8(3, 4, 4))),
        "idx_gzip": (GRAY28, gzip.compress(idx(u8(5, 28, 28)), mtime=0)),
        "idx_labels": (NONE, idx(np.array([1, 2, 3], dtype=np.uint8))),
        "png_gray": (NONE, image(u8(6, 6), "L", "PNG")),
        "png_rgb": (RGB8, image(u8(8, 8, 3), "RGB", "PNG")),
        "png_rgba": (NONE, image(u8(5, 7, 4), "RGBA", "PNG")),
        "png_palette": (NONE, save(Image.fromarray(u8(4, 4, 3), "RGB").convert("P"), "PNG")),
        "png_gray16": (GRAY28, save(Image.fromarray(rng.integers(0, 65535, (28, 28)).astype(np.uint16)), "PNG")),
        "jpeg_gray": (NONE, image(u8(8, 8), "L", "JPEG", quality=90)),
        "jpeg_rgb": (RGB8, image(u8(8, 8, 3), "RGB", "JPEG", quality=90)),
        "jpeg_progressive": (NONE, image(u8(16, 16, 3), "RGB", "JPEG", quality=80, progressive=True)),
        "labels_txt": (NONE, b"1\n2\n3\n"),
        "labels_csv": (NONE, b"file,label\nc.png,2\na.png,0\nb.png,1\n"),
        "preprocess_json": (NONE, json.dumps({"resize": [3, 3], "crop": 2, "mean": [0.5], "std": [0.25],
                                              "color": "gray", "layout": "NCHW"}).encode()),
        "preprocess_rgb": (RGB8, json.dumps({"resize": 8, "color": "rgb", "scale": 1.0}).encode()),
        "pb_tensor": (NONE, onnx.numpy_helper.from_array(rng.standard_normal((2, 3, 4)).astype(np.float32),
                                                         "x").SerializeToString()),
        "pb_tensor_fmnist": (GRAY28, onnx.numpy_helper.from_array(
            rng.standard_normal((3, 1, 28, 28)).astype(np.float32), "x").SerializeToString()),
        "labels_npy": (NONE, npy(np.array([0, 1, 2], dtype=np.int64))),
    }
    kinds = {"npy": 0, "npz": 1, "idx_plain": 2, "idx_gzip": 3, "idx_labels": 4, "png": 5, "jpeg": 6,
             "labels_txt": 7, "labels_csv": 8, "preprocess": 9, "pb": 10, "labels_npy": 11}
    os.makedirs(OUT, exist_ok=True)
    for name, (model, data) in sorted(seeds.items()):
        kind = next(v for k, v in sorted(kinds.items(), key=lambda kv: -len(kv[0])) if name.startswith(k))
        with open(os.path.join(OUT, name), "wb") as f:
            f.write(bytes([model | kind]) + data)
    print(f"wrote {len(seeds)} seeds to {os.path.normpath(OUT)}")


if __name__ == "__main__":
    main()
