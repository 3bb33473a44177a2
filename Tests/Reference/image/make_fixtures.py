# Generates the BottleneckImage test fixtures and their Pillow/torchvision reference outputs.
# Rerun from the repository root:
#   /opt/refvenv/bin/python Tests/Reference/image/make_fixtures.py
# Writes into Tests/BottleneckImageTests/Fixtures/:
#   decode/<name>.<ext> + decode/<name>.npy   Pillow's exif_transpose(Image.open(f)).convert("RGB") as uint8 HxWx3
#   preprocess/<name>.<ext>                   synthetic photo-like images
#   preprocess/<name>.<preset>.npy            torchvision Resize(256)+CenterCrop(224)+ToTensor+Normalize, float32 3x224x224
#   preprocess/<name>.<preset>.crop.npy       the uint8 224x224x3 image right before ToTensor (Pillow resize + crop)
# Everything is synthetic and deterministic (numpy seed); no dataset image is copied.
import ctypes
import ctypes.util
import io
import os
import struct
import zlib

import numpy as np
import torch
from PIL import Image, ImageOps
from torchvision import transforms

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
OUT = os.path.join(ROOT, "Tests", "BottleneckImageTests", "Fixtures")
DEC = os.path.join(OUT, "decode")
PRE = os.path.join(OUT, "preprocess")
os.makedirs(DEC, exist_ok=True)
os.makedirs(PRE, exist_ok=True)


def photo(w, h, seed, noise=10.0):
    """Smooth gradients, texture, hard-edged shapes and sensor-like noise: exercises resampling overshoot."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    r = 128 + 90 * np.sin(x / w * 3.1 + y / h * 1.7)
    g = 128 + 80 * np.cos(x / 37.0) * np.sin(y / 29.0)
    b = 255 * (x + y) / (w + h)
    img = np.stack([r, g, b], -1)
    for _ in range(6):
        x0, y0 = rng.integers(0, w), rng.integers(0, h)
        img[y0:y0 + h // 6, x0:x0 + w // 5] = rng.integers(0, 256, 3)
    cy, cx, rad = h * 0.6, w * 0.4, min(w, h) * 0.2
    img[(x - cx) ** 2 + (y - cy) ** 2 < rad ** 2] = (250, 245, 20)
    img += rng.normal(0, noise, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def reference(path):
    with Image.open(path) as im:
        return np.asarray(ImageOps.exif_transpose(im).convert("RGB"), dtype=np.uint8)


def save_decode(name, ext, writer):
    path = os.path.join(DEC, f"{name}.{ext}")
    writer(path)
    np.save(os.path.join(DEC, f"{name}.npy"), reference(path))


def exif_bytes(orientation, big_endian):
    """A minimal EXIF block with only IFD0/Orientation, in either byte order."""
    e = ">" if big_endian else "<"
    tiff = (b"MM" if big_endian else b"II") + struct.pack(e + "HI", 42, 8)
    tiff += struct.pack(e + "H", 1) + struct.pack(e + "HHI", 0x0112, 3, 1) + struct.pack(e + "HH", orientation, 0)
    tiff += struct.pack(e + "I", 0)
    return b"Exif\x00\x00" + tiff


def png_chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def write_png(path, samples, color_type, depth, interlace=False, extra=b""):
    """Hand-rolled PNG writer for what Pillow cannot write (16-bit RGB/RGBA/LA, Adam7, gAMA)."""
    h, w = samples.shape[:2]
    ch = samples.shape[2] if samples.ndim == 3 else 1
    arr = samples.reshape(h, w, ch).astype(">u2" if depth == 16 else np.uint8)

    def rows(a):
        return b"".join(b"\x00" + a[i].tobytes() for i in range(a.shape[0]))

    if interlace:
        raw = b""
        for x0, y0, dx, dy in ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)):
            sub = arr[y0::dy, x0::dx]
            if sub.size:
                raw += rows(sub)
    else:
        raw = rows(arr)
    ihdr = struct.pack(">IIBBBBB", w, h, depth, color_type, 0, 0, 1 if interlace else 0)
    data = b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + extra + png_chunk(b"IDAT", zlib.compress(raw, 9)) + png_chunk(b"IEND", b"")
    with open(path, "wb") as f:
        f.write(data)


def turbojpeg_ycck(path, rgb):
    """Pillow cannot write YCCK; TurboJPEG compresses CMYK pixels as YCCK (Adobe transform 2)."""
    lib = ctypes.CDLL(ctypes.util.find_library("turbojpeg") or "libturbojpeg.so.0")
    lib.tjInitCompress.restype = ctypes.c_void_p
    handle = lib.tjInitCompress()
    cmyk = np.asarray(Image.fromarray(rgb).convert("CMYK"), dtype=np.uint8)
    cmyk = np.ascontiguousarray(255 - cmyk)  # TurboJPEG CMYK is Adobe-inverted like Pillow's "CMYK;I"
    buf, size = ctypes.c_void_p(), ctypes.c_ulong(0)
    h, w = rgb.shape[:2]
    TJPF_CMYK, TJSAMP_420 = 11, 2
    rc = lib.tjCompress2(ctypes.c_void_p(handle), cmyk.ctypes.data_as(ctypes.c_void_p), w, 0, h, TJPF_CMYK,
                         ctypes.byref(buf), ctypes.byref(size), TJSAMP_420, 90, 0)
    assert rc == 0, "tjCompress2 failed"
    data = ctypes.string_at(buf, size.value)
    lib.tjFree(buf)
    lib.tjDestroy(ctypes.c_void_p(handle))
    with open(path, "wb") as f:
        f.write(data)


def main():
    base = photo(45, 29, 1)  # odd, non-square sizes catch axis and rounding mistakes
    pil = Image.fromarray(base)

    # --- JPEG ---
    save_decode("jpeg_baseline", "jpg", lambda p: pil.save(p, quality=90))
    save_decode("jpeg_444", "jpg", lambda p: pil.save(p, quality=95, subsampling=0))
    save_decode("jpeg_progressive", "jpg", lambda p: pil.save(p, quality=85, progressive=True))
    save_decode("jpeg_gray", "jpg", lambda p: pil.convert("L").save(p, quality=90))
    save_decode("jpeg_cmyk", "jpg", lambda p: pil.convert("CMYK").save(p, quality=90))
    save_decode("jpeg_ycck", "jpg", lambda p: turbojpeg_ycck(p, base))
    for o in range(1, 9):
        save_decode(f"jpeg_orient{o}", "jpg", lambda p, o=o: pil.save(p, quality=90, exif=exif_bytes(o, big_endian=o % 2 == 0)))

    # Pillow falls back to XMP tiff:Orientation when EXIF has none (both XMP spellings).
    xmp_attr = b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:Description tiff:Orientation="8"/></x:xmpmeta>'
    xmp_elem = b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:Description><tiff:Orientation>3</tiff:Orientation></rdf:Description></x:xmpmeta>'
    save_decode("jpeg_xmp_orient8", "jpg", lambda p: pil.save(p, quality=90, xmp=xmp_attr))
    save_decode("jpeg_xmp_orient3", "jpg", lambda p: pil.save(p, quality=90, xmp=xmp_elem))
    # EXIF orientation wins over XMP.
    save_decode("jpeg_exif6_xmp8", "jpg", lambda p: pil.save(p, quality=90, exif=exif_bytes(6, False), xmp=xmp_attr))

    # --- PNG ---
    rng = np.random.default_rng(7)
    gray = np.asarray(pil.convert("L"))
    alpha = rng.integers(0, 256, gray.shape, dtype=np.uint8)
    alpha[0, :5] = 0  # fully transparent pixels keep their colour in Pillow's convert("RGB")
    wide = (base.astype(np.uint32) * 257 + rng.integers(0, 257, base.shape)).astype(np.uint16)
    wide_alpha = rng.integers(0, 65536, gray.shape, dtype=np.uint16)
    save_decode("png_rgb8", "png", lambda p: pil.save(p))
    save_decode("png_rgb16", "png", lambda p: write_png(p, wide, 2, 16))
    save_decode("png_gray8", "png", lambda p: Image.fromarray(gray).save(p))
    save_decode("png_gray1", "png", lambda p: Image.fromarray(gray).convert("1").save(p))
    save_decode("png_gray4", "png", lambda p: write_png_gray4(p, gray))
    gray16 = np.concatenate([rng.integers(0, 256, (10, 45)), rng.integers(0, 65536, (19, 45))]).astype(np.uint16)
    save_decode("png_gray16", "png", lambda p: Image.fromarray(gray16).save(p))
    save_decode("png_gray_alpha8", "png", lambda p: Image.fromarray(np.dstack([gray, alpha]), "LA").save(p))
    save_decode("png_gray_alpha16", "png", lambda p: write_png(p, np.dstack([wide[..., 0], wide_alpha]), 4, 16))
    save_decode("png_rgba8", "png", lambda p: Image.fromarray(np.dstack([base, alpha]), "RGBA").save(p))
    save_decode("png_rgba16", "png", lambda p: write_png(p, np.dstack([wide, wide_alpha]), 6, 16))
    pal = pil.quantize(colors=40)
    save_decode("png_palette_trns", "png", lambda p: pal.save(p, transparency=bytes(range(0, 240, 6))))
    save_decode("png_palette4", "png", lambda p: pil.quantize(colors=16).save(p, bits=4))
    save_decode("png_interlaced_rgb8", "png", lambda p: write_png(p, base, 2, 8, interlace=True))
    save_decode("png_interlaced_rgba16", "png", lambda p: write_png(p, np.dstack([wide, wide_alpha]), 6, 16, interlace=True))
    gama = png_chunk(b"gAMA", struct.pack(">I", 100000))  # gamma 1.0: Pillow ignores it, so must we
    save_decode("png_gamma", "png", lambda p: write_png(p, base, 2, 8, extra=gama))
    save_decode("png_exif_orient6", "png", lambda p: pil.save(p, exif=exif_bytes(6, big_endian=True)))

    # --- PPM / PGM ---
    save_decode("ppm_rgb", "ppm", lambda p: pil.save(p))
    save_decode("pgm_gray", "pgm", lambda p: Image.fromarray(gray).save(p))

    # --- preprocessing references ---
    presets = {
        "imagenet": (transforms.InterpolationMode.BILINEAR, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
        "lite": (transforms.InterpolationMode.BICUBIC, (127 / 255,) * 3, (128 / 255,) * 3),
    }
    # name -> (pixels, save options, presets with a float tensor reference, presets with a uint8 crop reference)
    images = {
        "photo_500x375.jpg": (photo(500, 375, 11), dict(quality=90), ("imagenet", "lite"), ()),
        "photo_300x420.png": (photo(300, 420, 12, noise=3), {}, ("imagenet",), ("lite",)),
        "photo_180x120.png": (photo(180, 120, 13, noise=3), {}, (), ("imagenet", "lite")),  # upscaling path
        "photo_256x300.png": (photo(256, 300, 14, noise=3), {}, (), ("imagenet", "lite")),  # width already 256
    }
    for fname, (arr, kw, tensors, crops) in images.items():
        path = os.path.join(PRE, fname)
        Image.fromarray(arr).save(path, **kw)
        stem = fname.rsplit(".", 1)[0]
        img = ImageOps.exif_transpose(Image.open(path)).convert("RGB")
        for preset, (interp, mean, std) in presets.items():
            crop = transforms.Compose([transforms.Resize(256, interpolation=interp), transforms.CenterCrop(224)])(img)
            if preset in crops:
                np.save(os.path.join(PRE, f"{stem}.{preset}.crop.npy"), np.asarray(crop, dtype=np.uint8))
            if preset in tensors:
                t = transforms.Compose([transforms.ToTensor(), transforms.Normalize(mean, std)])(crop)
                np.save(os.path.join(PRE, f"{stem}.{preset}.npy"), t.numpy().astype(np.float32))


def write_png_gray4(path, gray):
    """4-bit gray, packed two samples per byte."""
    h, w = gray.shape
    q = (gray >> 4).astype(np.uint8)
    if w % 2:
        q = np.concatenate([q, np.zeros((h, 1), np.uint8)], 1)
    packed = (q[:, 0::2] << 4) | q[:, 1::2]
    raw = b"".join(b"\x00" + packed[i].tobytes() for i in range(h))
    ihdr = struct.pack(">IIBBBBB", w, h, 4, 0, 0, 0, 0)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", zlib.compress(raw, 9)) + png_chunk(b"IEND", b""))


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
