"""A stand-in for trtexec 8.6, 10.x and 11.x, installed on PATH by the tests as `trtexec` (install()).

Its options are each version's, from NVIDIA's trtexec documentation and "Migrating from TensorRT 10.x to
11.x" (trtexec): 11 removed --fp16 --bf16 --int8 --fp8 --int4 --best --calib --precisionConstraints
--layerPrecisions --layerOutputTypes --{min,opt,max}ShapesCalib --calibProfile, and keeps --stronglyTyped as a
no-op; an unknown option stops it with "Unknown option" (TensorRT OSS samples/common/sampleOptions.cpp and
trtexec.cpp, as docs/design.md, "TensorRT 10 and 11", records them). 8.6 has no --stronglyTyped (added
with strong typing in TensorRT 9/10). Every run prints trtexec's banner first,
`&&&& RUNNING TensorRT.trtexec [TensorRT v110400] # trtexec ...`, and `&&&& PASSED` or `&&&& FAILED` last.
The ONNX is read with onnx (a file it cannot read fails the build, as the real parser does), and the
"engine" is a JSON description of the command line. Each run appends its argv to $FAKE_TRTEXEC_RECORD;
a build fails as a GPU out of memory makes it when $FAKE_TRTEXEC_FAIL is set."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from fake_tensorrt.api import tensorrt_versions  # the builders' table, loaded as the API stand-in loads it

COMMON = ("--onnx", "--saveEngine", "--loadEngine", "--minShapes", "--optShapes", "--maxShapes", "--shapes",
          "--memPoolSize", "--timingCacheFile", "--useDLACore", "--exportLayerInfo", "--profilingVerbosity",
          "--verbose", "--noTF32", "--help", "--stronglyTyped")
WEAK_TYPING = ("--fp16", "--int8", "--best", "--calib", "--precisionConstraints", "--layerPrecisions",
               "--layerOutputTypes", "--minShapesCalib", "--optShapesCalib", "--maxShapesCalib", "--calibProfile")
BF16_FP8_INT4 = ("--bf16", "--fp8", "--int4")


def _abilities(version: str):
    """The version's row of the builders' table (stages/tensorrt/versions.py)."""
    return tensorrt_versions().abilities(int(version.split(".")[0]))


def options(version: str) -> set[str]:
    can = _abilities(version)
    if not can.implicit:
        return set(COMMON)  # --stronglyTyped kept, a no-op
    if can.strongly_typed:
        return set(COMMON) | set(WEAK_TYPING) | set(BF16_FP8_INT4)
    return (set(COMMON) - {"--stronglyTyped"}) | set(WEAK_TYPING) | {"--fp8"}


def tag(version: str) -> str:
    """The banner's tag of this version, by the builders' table (v8601, v100300, v110400)."""
    return tensorrt_versions().trtexec_tag(*(int(p) for p in version.split(".")[:3]))


def main(version: str, argv: list[str]) -> int:
    banner = f"[TensorRT {tag(version)}] # trtexec {' '.join(argv)}"
    print(f"&&&& RUNNING TensorRT.trtexec {banner}", flush=True)
    if os.environ.get("FAKE_TRTEXEC_RECORD"):
        with open(os.environ["FAKE_TRTEXEC_RECORD"], "a") as handle:
            handle.write(json.dumps({"version": version, "argv": argv}) + "\n")
    known, given = options(version), {}
    for arg in argv:
        flag, _, value = arg.partition("=")
        if flag not in known:
            print(f"[E] Unknown option: {flag} {value}".rstrip())
            print(f"&&&& FAILED TensorRT.trtexec {banner}")
            return 1
        given[flag] = value
    if "--help" in given:
        print("=== Model Options ===\n  --onnx=<file>  ONNX model")
        return 0
    if os.environ.get("FAKE_TRTEXEC_FAIL"):  # a GPU out of memory, say
        print("[E] Error[2]: [virtualMemoryBuffer.cpp::resizePhysical::140] Error Code 2: OutOfMemory")
        print(f"&&&& FAILED TensorRT.trtexec {banner}")
        return 1
    import onnx

    try:
        model = onnx.load(given["--onnx"])
        unknown = [n.op_type for n in model.graph.node if not onnx.defs.has(n.op_type)]
        if unknown:
            raise ValueError(f"No importer registered for op: {unknown[0]}")
    except Exception as exc:  # the real parser's failure, in its words' shape
        print(f"[E] [TRT] ModelImporter.cpp: {exc}")
        print("[E] Failed to parse onnx file")
        print(f"&&&& FAILED TensorRT.trtexec {banner}")
        return 1
    timing = given.get("--timingCacheFile")
    if timing:
        entries = json.loads(Path(timing).read_text()) if Path(timing).is_file() else []
        Path(timing).write_text(json.dumps(entries + [len(entries)]))
    Path(given["--saveEngine"]).write_text(json.dumps({"version": version, "options": given,
                                                        "nodes": len(model.graph.node)}))
    print(f"[I] Engine built in 0.1 sec.\n&&&& PASSED TensorRT.trtexec {banner}")
    return 0


def install(folder: Path, version: str) -> Path:
    """`trtexec` of this version in `folder` (for PATH), run by this Python."""
    folder.mkdir(parents=True, exist_ok=True)
    script = folder / "trtexec"
    script.write_text(f"#!{sys.executable}\nimport sys\nsys.path.insert(0, {str(Path(__file__).parent)!r})\n"
                      f"from fake_trtexec import main\nsys.exit(main({version!r}, sys.argv[1:]))\n")
    script.chmod(0o755)
    return script
