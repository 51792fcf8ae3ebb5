#!/usr/bin/env python3
"""Cross-checks the engine's safetensors reader/writer against the reference implementation
(PyPI `safetensors`, the Python bindings of the Rust crate) using numpy.

  safetensors_interop.py probe        exit 0 when safetensors and numpy import, else 3 with the reason
  safetensors_interop.py check FILE   FILE was written by the engine: load it with the reference
                                      library, compare names/dtypes/shapes/values with EXPECTED, and
                                      compare its bytes with the reference writer's output
  safetensors_interop.py write FILE   write EXPECTED with the reference writer (for the engine to read)

Both sides build the same tensors from the formulas below; tests/interop/test_safetensors_interop.cpp
holds the C++ twin. Exit status: 0 ok, 1 mismatch, 2 usage, 3 dependency missing.
"""
import sys

MISSING_DEPENDENCY = 3


def expected_tensors(np):
    """name -> (safetensors dtype, shape, numpy array of the values; bf16 as float32 values)."""
    def idx(n):
        return np.arange(n, dtype=np.int64)

    return {
        "emb.f32": ("F32", [3, 4], ((idx(12) - 5) * 0.375).astype(np.float32)),
        "w.f64": ("F64", [2, 3], idx(6) / 3.0),
        "h.f16": ("F16", [5], ((idx(5) - 2) * 0.5).astype(np.float16)),
        "b.bf16": ("BF16", [2, 3], ((idx(6) - 3) * 0.25).astype(np.float32)),
        "ids.i32": ("I32", [4], (idx(4) * 1000003 - 2000000).astype(np.int32)),
        "step.i64": ("I64", [], np.array([1234567890123], dtype=np.int64)),
        "big.i64": ("I64", [3], (idx(3) + 1) * (1 << 40) + 7 * (1 - 2 * (idx(3) % 2))),
        "mask.u8": ("U8", [2, 2, 2], ((idx(8) * 37 + 11) % 256).astype(np.uint8)),
        "empty.f32": ("F32", [0, 3], np.zeros(0, dtype=np.float32)),
    }


NUMPY_DTYPE = {"F32": "float32", "F64": "float64", "F16": "float16", "I32": "int32", "I64": "int64", "U8": "uint8"}
SPEC_DTYPE = dict(NUMPY_DTYPE, BF16="bfloat16")  # names the reference serializer takes


def raw_bytes(np, dtype, values):
    if dtype == "BF16":  # numpy has no bfloat16: the high half of each float32 (values are exact)
        return (values.astype("<f4").view("<u4") >> 16).astype("<u2").tobytes()
    return values.astype("<" + np.dtype(NUMPY_DTYPE[dtype]).str[1:]).tobytes()


def reference_serialize(safetensors, np, tensors, metadata):
    """tensors: {name: (dtype, shape, bytes)} -> file bytes from the reference writer."""
    if hasattr(safetensors, "TensorSpec"):  # safetensors >= 0.8: raw pointers
        keep_alive, specs = [], {}
        for name, (dtype, shape, data) in tensors.items():
            buf = np.frombuffer(data, dtype=np.uint8).copy() if data else np.zeros(1, dtype=np.uint8)
            keep_alive.append(buf)
            specs[name] = safetensors.TensorSpec(dtype=SPEC_DTYPE[dtype], shape=list(shape),
                                                 data_ptr=buf.ctypes.data, data_len=len(data))
        return bytes(safetensors.serialize(specs, metadata=metadata))
    flat = {name: {"dtype": SPEC_DTYPE[dtype], "shape": list(shape), "data": data}
            for name, (dtype, shape, data) in tensors.items()}
    return bytes(safetensors.serialize(flat, metadata=metadata))


def check(path, safetensors, np):
    errors = []
    expected = expected_tensors(np)
    with open(path, "rb") as f:
        file_bytes = f.read()

    # 1. The reference reader's typed view (numpy), for every dtype numpy has.
    with safetensors.safe_open(path, framework="numpy") as f:
        names = sorted(f.keys())
        if names != sorted(expected):
            errors.append(f"tensor names {names}, expected {sorted(expected)}")
        metadata = f.metadata()
        if metadata != {"format": "pt"}:
            errors.append(f"metadata {metadata}, expected {{'format': 'pt'}}")
        for name, (dtype, shape, values) in expected.items():
            if name not in names:
                continue
            view = f.get_slice(name)
            if view.get_dtype() != dtype or list(view.get_shape()) != shape:
                errors.append(f"{name}: {view.get_dtype()} {view.get_shape()}, expected {dtype} {shape}")
                continue
            if dtype == "BF16":
                continue  # checked from the raw bytes below
            got = f.get_tensor(name)
            want = values.astype(NUMPY_DTYPE[dtype]).reshape(shape)
            if got.dtype != want.dtype or got.shape != want.shape or not np.array_equal(got, want):
                errors.append(f"{name}: values {got.ravel().tolist()}, expected {want.ravel().tolist()}")

    # 2. Raw bytes through the low-level deserializer (the only way to see BF16 without torch).
    raw = {name: info for name, info in safetensors.deserialize(file_bytes)}
    for name, (dtype, shape, values) in expected.items():
        if name in raw and bytes(raw[name]["data"]) != raw_bytes(np, dtype, values):
            errors.append(f"{name}: raw bytes {bytes(raw[name]['data']).hex()}, "
                          f"expected {raw_bytes(np, dtype, values).hex()}")
    bf16 = np.frombuffer(bytes(raw["b.bf16"]["data"]), dtype="<u2") if "b.bf16" in raw else None
    if bf16 is not None:
        as_float = (bf16.astype(np.uint32) << 16).view(np.float32)
        if not np.array_equal(as_float, expected["b.bf16"][2]):
            errors.append(f"b.bf16 decodes to {as_float.tolist()}")

    # 3. The reference writer, given the same tensors, produces exactly the same file.
    reference = reference_serialize(
        safetensors, np,
        {name: (dtype, shape, raw_bytes(np, dtype, values)) for name, (dtype, shape, values) in expected.items()},
        {"format": "pt"})
    if reference != file_bytes:
        n_ref = int.from_bytes(reference[:8], "little")
        n_ours = int.from_bytes(file_bytes[:8], "little")
        errors.append("bytes differ from the reference writer's:\n  reference header: "
                      f"{reference[8:8 + n_ref]!r}\n  file header:      {file_bytes[8:8 + n_ours]!r}")
    return errors


def write(path, safetensors, np):
    tensors = {name: (dtype, shape, raw_bytes(np, dtype, values))
               for name, (dtype, shape, values) in expected_tensors(np).items()}
    data = reference_serialize(safetensors, np, tensors, {"format": "pt", "writer": "safetensors-python"})
    with open(path, "wb") as f:
        f.write(data)


def main(argv):
    if len(argv) < 2 or argv[1] not in ("probe", "check", "write") or (argv[1] != "probe" and len(argv) != 3):
        print(__doc__, file=sys.stderr)
        return 2
    try:
        import numpy as np
        import safetensors
    except ImportError as e:
        print(f"missing dependency: {e} (pip install safetensors numpy)")
        return MISSING_DEPENDENCY
    if argv[1] == "probe":
        print(f"safetensors {safetensors.__version__}, numpy {np.__version__}")
        return 0
    if argv[1] == "write":
        write(argv[2], safetensors, np)
        return 0
    errors = check(argv[2], safetensors, np)
    for e in errors:
        print("MISMATCH:", e)
    if not errors:
        print(f"ok: {argv[2]} matches the reference (safetensors {safetensors.__version__})")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
