"""What convert asks of an engine build (the convert section's values and export's folder), and the export
file each TensorRT route builds from: shared by the onnxruntime build (engines.py) and the TensorRT builds
(tensorrt_builds.py), which import it and never each other's request."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..formats.deployable_onnx import deployable_file
from ..formats.file_names import CACHE_FILE


@dataclass
class EngineRequest:
    export_dir: Path  # export's folder: model.onnx (TAO names, dynamic batch), the deployable ONNX, calibration.bin
    data_type: str
    output: Path
    # the convert section's values (conf/config.yaml holds their defaults)
    max_batch_size: int
    workspace_mib: int
    kind: str  # convert.engine: asked for, never chosen by probing the machine
    quantization: str  # convert.quantization: TensorRT's route (tensorrt_builds.route)
    min_batch_size: int
    opt_batch_size: int
    timing_cache_dir: Path | None  # where TensorRT's timing cache of each version is read and written back

    @classmethod
    def of(cls, convert, export_dir: Path, data_type: str, output: Path,
           timing_cache_dir: Path | None) -> EngineRequest:
        """The request the convert section (cfg.convert) asks for."""
        return cls(export_dir, data_type, output, convert.max_batch_size, convert.workspace_mib, convert.engine,
                   convert.quantization, convert.min_batch_size, convert.opt_batch_size, timing_cache_dir)

    @property
    def deployable(self) -> Path:
        """The ONNX the explicit route and onnxruntime build from, for this precision."""
        return Path(self.export_dir) / deployable_file(self.data_type)

    @property
    def model(self) -> Path:
        return Path(self.export_dir) / deployable_file("fp32")

    @property
    def cache(self) -> Path:
        return Path(self.export_dir) / CACHE_FILE


def needed_export_file(request: EngineRequest, route: str) -> Path:
    """The export file a route builds from, checked to be there."""
    path = request.deployable if route == "explicit" else request.model
    if not path.is_file():
        raise ValueError(f"{path} does not exist: run the export stage with export={request.data_type} first")
    if route == "implicit" and request.data_type == "int8" and not request.cache.is_file():
        raise ValueError(f"{request.cache} does not exist: int8 on the implicit route needs export's calibration cache")
    return path
