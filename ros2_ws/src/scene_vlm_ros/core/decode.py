"""Sensor messages -> numpy: the one decoder of the package (imports neither rclpy nor rosbags).

Every function works on any object that has the message's fields, so the same code decodes
rclpy messages (the node), ``rosbags`` dataclasses (bag reading) and the light views that
:func:`parse_image_cdr` / :func:`parse_compressed_image_cdr` make straight from serialized CDR
bytes (the node's raw image subscriptions: no Python message object is built for a megabyte image).

Supported inputs:

- ``sensor_msgs/Image``: rgb8, bgr8, rgba8, bgra8, 8UC3, mono8, 8UC1 (colour); 16UC1 / mono16
  millimetres and 32FC1 metres (depth); 16UC1 instance masks. Row padding (``step``) and
  big-endian data are honoured.
- ``sensor_msgs/CompressedImage``: colour as jpeg or png (``format`` "jpeg", "png",
  "rgb8; jpeg compressed bgr8", ...); depth from ``compressed_depth_image_transport``
  (``format`` "16UC1; compressedDepth png" or "32FC1; compressedDepth png": a 12-byte header,
  then a PNG of millimetres or of quantised inverse depth).
- ``sensor_msgs/CameraInfo`` (:class:`CameraCalibration`: pinhole K plus the distortion model),
  ``nav_msgs/Odometry``, ``geometry_msgs/TransformStamped`` and our ``InstanceLabelArray``.

Conventions: stamps are integer nanoseconds; transforms are 4x4 float64 ``T_parent_child``; depth
is float32 metres with 0 meaning "no reading". Every failure raises :class:`MessageConversionError`
with a message that says what is wrong with the input.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

from .geometry import make_transform, quat_xyzw_to_matrix
from .types import CameraIntrinsics

ENCODING_DTYPES: dict[str, tuple[np.dtype, int]] = {
    "rgb8": (np.dtype(np.uint8), 3),
    "bgr8": (np.dtype(np.uint8), 3),
    "rgba8": (np.dtype(np.uint8), 4),
    "bgra8": (np.dtype(np.uint8), 4),
    "8UC3": (np.dtype(np.uint8), 3),
    "mono8": (np.dtype(np.uint8), 1),
    "8UC1": (np.dtype(np.uint8), 1),
    "mono16": (np.dtype(np.uint16), 1),
    "16UC1": (np.dtype(np.uint16), 1),
    "32FC1": (np.dtype(np.float32), 1),
}
COLOR_ENCODINGS = ("rgb8", "bgr8", "rgba8", "bgra8", "8UC3", "mono8", "8UC1")
DEPTH_ENCODINGS = ("16UC1", "mono16", "32FC1")
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class MessageConversionError(ValueError):
    """A message cannot be converted (unsupported encoding, inconsistent sizes, bad values)."""


def time_to_ns(stamp: Any) -> int:
    """Integer nanoseconds of a ``builtin_interfaces/Time``."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def header_stamp_ns(msg: Any) -> int:
    """Header stamp of a message in integer nanoseconds."""
    return time_to_ns(msg.header.stamp)


# ---------------------------------------------------------------------------------------------
# Raw CDR views (the node's raw subscriptions)
# ---------------------------------------------------------------------------------------------


@dataclass
class _Stamp:
    sec: int
    nanosec: int


@dataclass
class _Header:
    stamp: _Stamp
    frame_id: str


@dataclass
class ImageView:
    """The fields of a ``sensor_msgs/Image`` parsed from CDR; ``data`` is a zero-copy uint8 view."""

    header: _Header
    height: int
    width: int
    encoding: str
    is_bigendian: int
    step: int
    data: np.ndarray


@dataclass
class CompressedImageView:
    """The fields of a ``sensor_msgs/CompressedImage`` parsed from CDR."""

    header: _Header
    format: str
    data: np.ndarray


class _Cdr:
    """Minimal little/big-endian CDR reader for the two image types (alignment from the payload start)."""

    def __init__(self, buf: bytes | memoryview) -> None:
        self.buf = memoryview(buf)
        if len(self.buf) < 4:
            raise MessageConversionError(f"serialized message too short ({len(self.buf)} bytes)")
        kind = bytes(self.buf[:2])
        if kind in (b"\x00\x01", b"\x00\x03"):
            self.e = "<"
        elif kind in (b"\x00\x00", b"\x00\x02"):
            self.e = ">"
        else:
            raise MessageConversionError(f"unsupported CDR encapsulation {kind.hex()}")
        self.pos = 4

    def _align(self, n: int) -> None:
        off = (self.pos - 4) % n
        if off:
            self.pos += n - off

    def _need(self, n: int) -> None:
        if self.pos + n > len(self.buf):
            raise MessageConversionError(
                f"serialized message truncated: needs {self.pos + n} bytes, has {len(self.buf)}")

    def u32(self) -> int:
        self._align(4)
        self._need(4)
        (v,) = struct.unpack_from(self.e + "I", self.buf, self.pos)
        self.pos += 4
        return int(v)

    def i32(self) -> int:
        self._align(4)
        self._need(4)
        (v,) = struct.unpack_from(self.e + "i", self.buf, self.pos)
        self.pos += 4
        return int(v)

    def u8(self) -> int:
        self._need(1)
        v = self.buf[self.pos]
        self.pos += 1
        return int(v)

    def string(self) -> str:
        n = self.u32()
        self._need(n)
        raw = bytes(self.buf[self.pos:self.pos + n])
        self.pos += n
        return raw.rstrip(b"\x00").decode("utf-8", errors="replace")

    def octets(self) -> np.ndarray:
        n = self.u32()
        self._need(n)
        out = np.frombuffer(self.buf, dtype=np.uint8, count=n, offset=self.pos)
        self.pos += n
        return out

    def header(self) -> _Header:
        sec = self.i32()
        nanosec = self.u32()
        return _Header(_Stamp(sec, nanosec), self.string())


def parse_image_cdr(buf: bytes | memoryview) -> ImageView:
    """:class:`ImageView` of a serialized ``sensor_msgs/msg/Image`` (no copy of the pixel data)."""
    r = _Cdr(buf)
    header = r.header()
    height, width = r.u32(), r.u32()
    encoding = r.string()
    is_bigendian = r.u8()
    step = r.u32()
    return ImageView(header, height, width, encoding, is_bigendian, step, r.octets())


def parse_compressed_image_cdr(buf: bytes | memoryview) -> CompressedImageView:
    """:class:`CompressedImageView` of a serialized ``sensor_msgs/msg/CompressedImage``."""
    r = _Cdr(buf)
    header = r.header()
    fmt = r.string()
    return CompressedImageView(header, fmt, r.octets())


# ---------------------------------------------------------------------------------------------
# Images
# ---------------------------------------------------------------------------------------------


def is_compressed(msg: Any) -> bool:
    """True for a CompressedImage (it has ``format`` and no ``encoding``)."""
    return hasattr(msg, "format") and not hasattr(msg, "encoding")


def msg_to_image(msg: Any) -> np.ndarray:
    """Array of an Image message: (H, W, C) for multi-channel encodings (channel order as encoded), (H, W) otherwise."""
    encoding = msg.encoding
    if encoding not in ENCODING_DTYPES:
        raise MessageConversionError(f"unsupported image encoding {encoding!r}; use one of {sorted(ENCODING_DTYPES)}")
    dtype, channels = ENCODING_DTYPES[encoding]
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    if height == 0 or width == 0:
        raise MessageConversionError(f"image has zero width or height ({width}x{height})")
    row_bytes = width * channels * dtype.itemsize
    raw = np.asarray(msg.data, dtype=np.uint8)
    if step < row_bytes or raw.size < step * height:
        raise MessageConversionError(
            f"image data too small: {width}x{height} {encoding} needs step >= {row_bytes} and "
            f">= {row_bytes * height} bytes, got step {step} and {raw.size} bytes"
        )
    rows = raw[: step * height].reshape(height, step)[:, :row_bytes]
    typed = np.ascontiguousarray(rows).view(dtype.newbyteorder(">" if msg.is_bigendian else "<"))
    out = typed.astype(dtype, copy=False)
    return out.reshape(height, width, channels) if channels > 1 else out.reshape(height, width)


def _decode_png_or_jpeg(data: Any, flags: int, what: str) -> np.ndarray:
    import cv2

    buf = np.asarray(data, dtype=np.uint8)
    if buf.size == 0:
        raise MessageConversionError(f"{what}: empty compressed data")
    img = cv2.imdecode(buf, flags)
    if img is None:
        raise MessageConversionError(f"{what}: compressed data could not be decoded (corrupt or unsupported)")
    return img


def msg_to_rgb(msg: Any) -> np.ndarray:
    """(H, W, 3) uint8 RGB of a colour Image (rgb8/bgr8/rgba8/bgra8/mono8) or CompressedImage (jpeg/png)."""
    if is_compressed(msg):
        import cv2

        fmt = str(msg.format).lower()
        if "compresseddepth" in fmt:
            raise MessageConversionError(f"colour image expected, got a compressed depth image ({msg.format!r})")
        img = _decode_png_or_jpeg(msg.data, cv2.IMREAD_UNCHANGED, "colour image")
        if img.dtype != np.uint8:
            raise MessageConversionError(f"colour image must be 8-bit, the compressed data holds {img.dtype}")
        if img.ndim == 2:
            return np.repeat(img[:, :, None], 3, axis=2)
        # image_transport compresses colour as bgr8 (OpenCV's order), whatever the source encoding.
        return np.ascontiguousarray(img[:, :, 2::-1])
    img = msg_to_image(msg)
    if msg.encoding in ("rgb8", "8UC3"):
        return img
    if msg.encoding == "bgr8":
        return np.ascontiguousarray(img[:, :, ::-1])
    if msg.encoding == "rgba8":
        return np.ascontiguousarray(img[:, :, :3])
    if msg.encoding == "bgra8":
        return np.ascontiguousarray(img[:, :, 2::-1])
    if msg.encoding in ("mono8", "8UC1"):
        return np.repeat(img[:, :, None], 3, axis=2)
    raise MessageConversionError(f"colour image expected (rgb8/bgr8/mono8), got encoding {msg.encoding!r}")


def msg_to_depth_m(msg: Any) -> np.ndarray:
    """(H, W) float32 metres of a 16UC1/mono16 (mm) or 32FC1 (m) depth Image, or a compressedDepth image."""
    if is_compressed(msg):
        return _compressed_depth_to_m(msg)
    img = msg_to_image(msg)
    if msg.encoding in ("16UC1", "mono16"):
        return img.astype(np.float32) / np.float32(1000.0)
    if msg.encoding == "32FC1":
        return np.where(np.isfinite(img) & (img > 0), img, 0.0).astype(np.float32)
    raise MessageConversionError(f"depth image must be 16UC1 (mm) or 32FC1 (m), got encoding {msg.encoding!r}")


def _compressed_depth_to_m(msg: Any) -> np.ndarray:
    import cv2

    fmt = str(msg.format)
    if "compresseddepth" not in fmt.lower():
        raise MessageConversionError(
            f"depth must be a raw Image or a compressedDepth CompressedImage, got format {fmt!r} "
            "(jpeg/png colour compression cannot carry depth)")
    if "rvl" in fmt.lower():
        raise MessageConversionError(f"compressedDepth RVL is not supported ({fmt!r}); republish with png")
    data = np.asarray(msg.data, dtype=np.uint8)
    raw = data.tobytes()
    if raw[:8] == _PNG_MAGIC:
        header, png = None, data
    elif raw[12:20] == _PNG_MAGIC:
        header, png = struct.unpack_from("<iff", raw, 0), data[12:]
    else:
        raise MessageConversionError(f"compressedDepth data of {data.size} bytes holds no PNG image")
    img = _decode_png_or_jpeg(png, cv2.IMREAD_UNCHANGED, "depth image")
    encoding = fmt.split(";")[0].strip()
    if img.ndim != 2 or img.dtype != np.uint16:
        raise MessageConversionError(f"compressedDepth PNG must be 16-bit single channel, got {img.dtype} {img.shape}")
    if encoding in ("16UC1", "mono16"):
        return img.astype(np.float32) / np.float32(1000.0)
    if encoding == "32FC1":
        if header is None:
            raise MessageConversionError("32FC1 compressedDepth needs its quantisation header")
        _fmt, quant_a, quant_b = header
        v = img.astype(np.float32)
        with np.errstate(divide="ignore", invalid="ignore"):
            d = np.where(v > 0, np.float32(quant_a) / (v - np.float32(quant_b)), 0.0).astype(np.float32)
        return np.where(np.isfinite(d) & (d > 0), d, 0.0).astype(np.float32)
    raise MessageConversionError(f"compressedDepth of encoding {encoding!r} is not a depth image")


def msg_to_mask(msg: Any) -> np.ndarray:
    """(H, W) uint16 instance mask of a 16UC1 Image (or a 16-bit PNG CompressedImage)."""
    if is_compressed(msg):
        import cv2

        img = _decode_png_or_jpeg(msg.data, cv2.IMREAD_UNCHANGED, "instance mask")
        if img.ndim != 2 or img.dtype != np.uint16:
            raise MessageConversionError(f"instance mask must be a 16-bit single-channel PNG, got {img.dtype}")
        return img
    if msg.encoding not in ("16UC1", "mono16"):
        raise MessageConversionError(f"instance mask must be 16UC1, got {msg.encoding!r}")
    return msg_to_image(msg)


# ---------------------------------------------------------------------------------------------
# CameraInfo
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CameraCalibration:
    """A CameraInfo: pinhole intrinsics plus its distortion (model name, coefficients)."""

    intrinsics: CameraIntrinsics
    distortion_model: str = ""
    d: tuple[float, ...] = field(default=())
    frame_id: str = ""

    @property
    def has_distortion(self) -> bool:
        return any(abs(c) > 1e-12 for c in self.d)


def msg_to_camera_calibration(msg: Any) -> CameraCalibration:
    """:class:`CameraCalibration` of a CameraInfo; raises for an uncalibrated or empty camera."""
    K = np.asarray(msg.k, dtype=np.float64).reshape(3, 3)  # noqa: N806
    if not np.all(np.isfinite(K)) or K[0, 0] <= 0 or K[1, 1] <= 0:
        raise MessageConversionError(
            f"CameraInfo has no valid K (fx={K[0, 0]}, fy={K[1, 1]}); is the camera calibrated?"
        )
    if int(msg.width) <= 0 or int(msg.height) <= 0:
        raise MessageConversionError(f"CameraInfo has an empty image size {msg.width}x{msg.height}")
    d = tuple(float(c) for c in np.asarray(msg.d, dtype=np.float64).reshape(-1))
    if not all(np.isfinite(d)):
        raise MessageConversionError(f"CameraInfo distortion has non-finite coefficients {d}")
    return CameraCalibration(CameraIntrinsics.from_K(K, int(msg.width), int(msg.height)),
                             str(msg.distortion_model), d, str(msg.header.frame_id))


def msg_to_camera_info(msg: Any) -> CameraIntrinsics:
    """Pinhole intrinsics of a CameraInfo's K (see :func:`msg_to_camera_calibration` for distortion)."""
    return msg_to_camera_calibration(msg).intrinsics


# ---------------------------------------------------------------------------------------------
# Poses and labels
# ---------------------------------------------------------------------------------------------


def quat_to_matrix(x: float, y: float, z: float, w: float, what: str) -> np.ndarray:
    """Rotation of a quaternion; raises for a non-finite or zero one (``what`` names the source)."""
    q = np.array([x, y, z, w], dtype=np.float64)
    norm = float(np.linalg.norm(q))
    if not np.isfinite(norm) or norm < 1e-9:
        raise MessageConversionError(f"{what} has an invalid quaternion {q.tolist()}")
    return quat_xyzw_to_matrix(q)


def _translation(x: float, y: float, z: float, what: str) -> list[float]:
    t = [float(x), float(y), float(z)]
    if not all(np.isfinite(t)):
        raise MessageConversionError(f"{what} has a non-finite position {t}")
    return t


def msg_to_odometry(msg: Any) -> tuple[int, str, str, np.ndarray]:
    """``(stamp_ns, frame_id, child_frame_id, T_frame_child)`` of an Odometry message."""
    p = msg.pose.pose
    o = p.orientation
    R = quat_to_matrix(o.x, o.y, o.z, o.w, "Odometry pose")  # noqa: N806
    T = make_transform(R, _translation(p.position.x, p.position.y, p.position.z, "Odometry pose"))  # noqa: N806
    return time_to_ns(msg.header.stamp), str(msg.header.frame_id), str(msg.child_frame_id), T


def msg_to_transform(msg: Any) -> tuple[int, str, str, np.ndarray]:
    """``(stamp_ns, parent, child, T_parent_child)`` of a TransformStamped."""
    tr = msg.transform
    r = tr.rotation
    what = f"transform {msg.header.frame_id}->{msg.child_frame_id}"
    R = quat_to_matrix(r.x, r.y, r.z, r.w, what)  # noqa: N806
    T = make_transform(R, _translation(tr.translation.x, tr.translation.y, tr.translation.z, what))  # noqa: N806
    return time_to_ns(msg.header.stamp), str(msg.header.frame_id), str(msg.child_frame_id), T


def msg_to_labels(msg: Any) -> dict[int, str]:
    """``{instance_id: label}`` of an ``InstanceLabelArray``."""
    return {int(item.instance_id): str(item.label) for item in msg.labels}


def stream_decoder(stream: str) -> Optional[Any]:
    """The decoder of an image stream: ``color`` -> RGB, ``depth`` -> metres, ``mask`` -> uint16 ids."""
    return {"color": msg_to_rgb, "depth": msg_to_depth_m, "mask": msg_to_mask}.get(stream)
