"""TAO backends, convert: `tao-converter` or TAO Deploy's `detectnet_v2 gen_trt_engine`."""
from __future__ import annotations


from ..formats.file_names import CACHE_FILE
from ..formats.onnx_model import TAO_INPUT, TAO_OUTPUTS
from ..pipeline.backends import ConvertReport, ConvertRequest
from ..pipeline.layout import ENGINE_FILES
from . import argv
from .runners import RunnerError, check_written, load_key, runner_for


def run(request: ConvertRequest) -> ConvertReport:
    cfg, facts, spec_path, exported, out = request.cfg, request.facts, request.spec_path, request.exported, request.out
    tool = "tao-converter" if cfg.backend.converter == "tao-converter" else "detectnet_v2"  # gen_trt_engine
    runner, c, data_type = runner_for(cfg.backend, tool), cfg.convert, cfg.export.data_type
    model = exported / f"model.{cfg.backend.export_format}"
    if not model.is_file():
        raise RunnerError(f"{model} does not exist: run the export stage with this backend first")
    cache = exported / CACHE_FILE if data_type == "int8" else None
    if cache is not None and not cache.is_file():
        raise RunnerError(f"{cache} does not exist: export with export=int8 first")
    engine = out / ENGINE_FILES["tensorrt"]
    chw = (facts.channels, facts.height, facts.width)
    if cfg.backend.converter == "tao-converter":
        shape = "x".join(map(str, chw))
        profile = f"{TAO_INPUT},{c.min_batch_size}x{shape},{c.opt_batch_size}x{shape},{c.max_batch_size}x{shape}"
        command = argv.tao_converter(
            runner.path(model), load_key(cfg.backend), chw, TAO_OUTPUTS, c, data_type, runner.path(engine),
            cache=runner.path(cache) if cache else None,
            cal_batch_size=cfg.export.batch_size if cache else None, profiles=[profile])
    else:
        key = load_key(cfg.backend) if cfg.backend.export_format == "etlt" else None
        command = argv.gen_trt_engine(
            runner.path(model), key, runner.spec(spec_path, out), c, data_type, runner.path(engine),
            runner.path(out), cache=runner.path(cache) if cache else None,
            batches=cfg.export.batches if cache else None, batch_size=cfg.export.batch_size if cache else None)
    runner.run(command, out / "tao.log")
    # a TensorRT plan cannot be read without TensorRT: only its presence is checked
    check_written(runner, engine, command[0] if command[0] == "tao-converter" else "detectnet_v2 gen_trt_engine")
    # No TensorRT runtime here to run the engine: the metrics say what was built, not how well.
    return ConvertReport(data_type, "tensorrt", engine.stat().st_size)
