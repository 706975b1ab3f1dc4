"""Calibration: the entropy threshold, streamed histograms, the cache format, and scales checked
against an independent computation on the same data."""
from __future__ import annotations

import struct
import tempfile
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from reference_entropy import reference_entropy_amax
from stages import bundled_sample
from stages.formats.calibration_cache import (CalibrationCacheError, calibration_tensor_names,
                                              read_cache, write_cache)
from stages.quantization.activations import (WIDEST_BLOCK, AllTensors, Schedule, all_tensors_session,
                                             with_all_outputs)
from stages.quantization.calibrate import collect_histograms, collect_ranges
from stages.quantization.histograms import HistogramCollector
from stages.quantization.ranges import Calibrator
from stages.quantization.thresholds import entropy_amax

RNG = np.random.default_rng(1)
DISTRIBUTIONS = {
    "normal": RNG.standard_normal(100_000),
    "relu": np.maximum(RNG.standard_normal(100_000), 0),
    "heavy_tail": RNG.laplace(size=50_000) ** 3,
    "uniform_sparse": RNG.random(3_000),
}


# 2048 bins, as a histogram's grid starts; and a grid widened past them, to a length no multiple of 128: the
# candidates whose chunks carry over from one to the next (thresholds.py) and those where they move
@pytest.mark.parametrize("name, bins", [*((name, 2048) for name in DISTRIBUTIONS), ("heavy_tail", 2113)])
def test_entropy_threshold_equals_the_loop_by_loop_reference(name, bins):
    values = np.abs(DISTRIBUTIONS[name])
    hist, edges = np.histogram(values, bins=bins, range=(0, values.max()))
    assert entropy_amax(hist, edges[1]) == pytest.approx(reference_entropy_amax(hist, edges), rel=1e-12)


def test_entropy_threshold_clips_a_heavy_tail():
    values = np.abs(DISTRIBUTIONS["heavy_tail"])
    hist, edges = np.histogram(values, bins=2048, range=(0, values.max()))
    assert entropy_amax(hist, edges[1]) < 0.5 * values.max()


def test_streamed_histogram_equals_one_histogram_of_all_batches():
    batches = [RNG.standard_normal(20_000).astype(np.float32) * scale for scale in (1, 3, 9, 30)]
    collector = HistogramCollector(skip_zeros=False)
    for batch in batches:
        collector.add(batch)
    assert len(collector.hist) < 4096 and collector.hist.sum() == 80_000
    everything = np.abs(np.concatenate(batches))
    expected, _ = np.histogram(everything, bins=len(collector.hist), range=(0, collector.edges()[-1]))
    # identical up to values that sit on a bin edge (float rounding of the two computations)
    assert np.abs(expected - collector.hist).sum() <= 10


def test_histogram_skips_exact_zeros_when_asked():
    collector = HistogramCollector(skip_zeros=True)
    collector.add(np.array([0, 0, 0, 1.0, 2.0], dtype=np.float32))
    assert collector.hist.sum() == 2


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "tiny.onnx"
    bundled_sample.build_model(path, 64, 32, base_width=4, seed=3, batch="N")
    return path


@pytest.fixture(scope="module")
def batches():
    rng = np.random.default_rng(5)
    return [rng.random((4, 3, 32, 64), dtype=np.float32) for _ in range(3)]


def independent_activations(model_path, batches):
    """Every tensor's values over all batches, by one run of the full data through onnxruntime."""
    model = onnx.load(str(model_path))
    session = ort.InferenceSession(with_all_outputs(model).SerializeToString())
    data = np.concatenate(batches)
    names = [o.name for o in session.get_outputs()]
    values = dict(zip(names, session.run(names, {"input_1": data})))
    values["input_1"] = data
    return values


def test_minmax_scales_are_the_largest_magnitudes(tiny_model, batches):
    amax = collect_ranges(tiny_model, iter(batches), "minmax", percentile=None, skip_zeros=True)
    values = independent_activations(tiny_model, batches)
    assert set(amax) == set(calibration_tensor_names(onnx.load(str(tiny_model))))
    for name, got in amax.items():
        assert got == pytest.approx(float(np.abs(values[name]).max()), rel=1e-5), name


def test_histograms_are_the_same_to_the_count_whatever_pieces_the_tensors_are_binned_in(tiny_model, batches):
    # a large tensor is binned in pieces on several threads; each batch reaches further than the last,
    # so the grids widen (and merge bins) between batches as well
    growing = [batch * scale for batch, scale in zip(batches, (1, 5, 40))]
    whole = collect_histograms(tiny_model, iter(growing), skip_zeros=False, schedule=Schedule(2))
    # tensors of 32768 values: 33 uneven pieces
    pieces = collect_histograms(tiny_model, iter(growing), skip_zeros=False, schedule=Schedule(2, chunk_elements=999))
    assert set(pieces) == set(whole)
    for name, collector in whole.items():
        assert (collector.width, collector.top) == (pieces[name].width, pieces[name].top), name
        assert np.array_equal(collector.hist, pieces[name].hist), name
    assert any(len(c.hist) > 2048 for c in whole.values()), "no grid widened: the case is not exercised"


def test_histograms_are_the_same_to_the_count_when_batches_run_in_halves(tiny_model, batches):
    # past Schedule.halves_bytes a batch runs as two halves into the same buffers (onnxruntime's working
    # memory is half a batch's) and is then reduced whole; here every second half reaches further than its first
    growing = [batch * scale for batch, scale in zip(batches, (1, 5, 40))]
    for batch in growing:
        batch[2:] *= 7
    whole = collect_histograms(tiny_model, iter(growing), skip_zeros=False, schedule=Schedule(2, halves_bytes=1 << 40))
    in_halves = collect_histograms(tiny_model, iter(growing), skip_zeros=False, schedule=Schedule(2, halves_bytes=0))
    for name, collector in whole.items():
        assert (collector.width, collector.top) == (in_halves[name].width, in_halves[name].top), name
        assert np.array_equal(collector.hist, in_halves[name].hist), name
    assert any(len(c.hist) > 2048 for c in whole.values()), "no grid widened: the case is not exercised"


@pytest.mark.parametrize("halves_bytes, in_halves", [(0, 3), (1 << 40, 0)])
def test_a_batch_past_the_schedules_size_runs_as_two_halves_into_the_same_buffers(tiny_model, batches, halves_bytes,
                                                                                  in_halves):
    model = onnx.load(str(tiny_model))
    name = model.graph.input[0].name
    run = AllTensors(all_tensors_session(model, (), 2), model, name, halves_bytes)
    whole = AllTensors(all_tensors_session(model, (), 2), model, name, 1 << 40)
    for batch in batches:
        got = {tensor: values.copy() for tensor, values in run.run(batch).items()}
        assert all(np.array_equal(got[tensor], values) for tensor, values in whole.run(batch).items())
    assert run.runs_in_halves == in_halves


def test_the_calibration_session_hands_over_every_tensors_values_where_unreordered_in_onnxruntimes_order(
        tiny_model, batches):
    # on x86 onnxruntime keeps a convolution's output in channel blocks and reorders each graph output to
    # NCHW; the statistics ignore order, so the session skips the reorders where a block holds no padding.
    # Every tensor holds its values, and one the graph reads on (a ReLU before the head's concat) is NCHW
    model = onnx.load(str(tiny_model))
    run = AllTensors(all_tensors_session(model, (), 2), model, model.graph.input[0].name, 1 << 40)
    got = run.run(batches[0])
    reference = independent_activations(tiny_model, batches[:1])
    in_blocks = []
    for name, values in got.items():
        assert values.shape == reference[name].shape, name
        if not np.allclose(values, reference[name], rtol=1e-5, atol=1e-6):
            in_order = np.sort(reference[name], axis=None)
            assert np.allclose(np.sort(values, axis=None), in_order, rtol=1e-5, atol=1e-6), name
            in_blocks.append(name)
    if not in_blocks:
        pytest.skip("onnxruntime keeps no tensor in channel blocks on this machine (no AVX2)")
    assert all(reference[name].shape[1] % WIDEST_BLOCK == 0 for name in in_blocks)
    assert "output_cov/Sigmoid" not in in_blocks and "block_3b_relu/Relu" not in in_blocks


def test_the_calibration_session_is_made_where_no_temporary_folder_can_be_written(tiny_model, batches, tmp_path,
                                                                                 monkeypatch):
    # onnxruntime's optimised graph goes through a temporary folder; without one, the session keeps the
    # reorders: every tensor in NCHW order
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "missing"))
    model = onnx.load(str(tiny_model))
    run = AllTensors(all_tensors_session(model, (), 2), model, model.graph.input[0].name, 1 << 40)
    reference = independent_activations(tiny_model, batches[:1])
    for name, values in run.run(batches[0]).items():
        assert np.allclose(values, reference[name], rtol=1e-5, atol=1e-6), name


def test_a_model_with_a_fixed_batch_size_calibrates_in_whole_batches(tmp_path, batches):
    fixed = tmp_path / "fixed.onnx"
    bundled_sample.build_model(fixed, 64, 32, base_width=4, seed=3, batch=4)
    dynamic = tmp_path / "dynamic.onnx"
    bundled_sample.build_model(dynamic, 64, 32, base_width=4, seed=3, batch="N")
    schedule = Schedule(2, halves_bytes=0)
    assert collect_ranges(fixed, iter(batches), "entropy", percentile=None, skip_zeros=True, schedule=schedule) == \
        collect_ranges(dynamic, iter(batches), "entropy", percentile=None, skip_zeros=True, schedule=schedule)


def test_entropy_scales_match_an_independent_computation(tiny_model, batches):
    amax = collect_ranges(tiny_model, iter(batches), "entropy", skip_zeros=True, percentile=None)
    values = independent_activations(tiny_model, batches)
    for name in list(amax)[::5]:  # the reference search is slow: every fifth tensor, input included
        got = amax[name]
        data = np.abs(values[name]).ravel()
        data = data[data != 0]
        # the streamed grid: width fixed by the first batch's max, extended (and merged) as needed
        first = float(np.abs(values[name][:4]).max())
        width = first / 2048
        bins = int(data.max() / width) + 1
        while bins >= 4096:
            width, bins = width * 2, -(-bins // 2)
        hist, edges = np.histogram(data, bins=bins, range=(0, bins * width))
        assert got == pytest.approx(reference_entropy_amax(hist, edges), rel=0.01, abs=2 * width), name


def test_cache_round_trips_scales_as_big_endian_float_bits(tmp_path):
    path = tmp_path / "cal.bin"
    write_cache(path, {"input_1": 1.0, "conv1/BiasAdd": 12.7}, "entropy", 8601)
    lines = path.read_text().splitlines()
    assert lines[0] == "TRT-8601-EntropyCalibration2"
    assert lines[1] == "input_1: " + struct.pack(">f", np.float32(1 / 127)).hex()
    header, scales = read_cache(path)
    assert scales == pytest.approx({"input_1": 1 / 127, "conv1/BiasAdd": 0.1})


def test_unparsable_cache_line_is_named(tmp_path):
    path = tmp_path / "cal.bin"
    path.write_text("TRT-8601-EntropyCalibration2\ninput_1: 3c010204\nconv1: zz\n")
    with pytest.raises(CalibrationCacheError, match=r"cal.bin:3: expected 'TENSOR_NAME: 8 hex digits'"):
        read_cache(path)


def test_cache_without_header_is_rejected(tmp_path):
    path = tmp_path / "cal.bin"
    path.write_text("input_1: 3c010204\n")
    with pytest.raises(CalibrationCacheError, match=r"cal.bin:1: expected a header"):
        read_cache(path)




def test_the_percentile_comes_from_the_caller_never_from_a_library_default():
    # conf/backend/open.yaml holds backend.percentile; the library has no second default to drift from it
    with ThreadPoolExecutor(1) as pool:
        with pytest.raises(ValueError, match=r"percentile needs the percentile \(backend.percentile\)"):
            Calibrator("percentile", None, True, pool)
        with pytest.raises(ValueError, match=r"needs the percentile \(backend.percentile\)"):
            Calibrator("auto", None, True, pool).candidates()


def test_a_calibrator_is_still_usable_after_it_gave_its_answer(batches):
    # the caller owns the threads: reading the ranges does not end them
    with ThreadPoolExecutor(2) as pool:
        calibrator = Calibrator("entropy", None, True, pool)
        calibrator.add({"x": batches[0]})
        first = calibrator.amax()
        calibrator.add({"x": batches[1] * 3})
        assert calibrator.amax()["x"] > first["x"]


def _streamed_batches(rng) -> list[dict[str, np.ndarray]]:
    """Batches of two tensors: the second batch stays inside the first's range, the third reaches past
    it, the fourth is all zeros, the fifth is negative only (its ReLU is all zeros)."""
    a, b = rng.standard_normal(30_000).astype(np.float32), rng.standard_normal(7_000).astype(np.float32)
    return [{"a": a, "b": b}, {"a": a * 0.5, "b": b * 0.9}, {"a": a * 6, "b": b * 40},
            {"a": np.zeros_like(a), "b": np.zeros_like(b)}, {"a": -np.abs(a), "b": b}]


@pytest.mark.parametrize("skip_zeros", [True, False])
def test_a_batch_on_fixed_grids_is_binned_in_one_pass_to_the_count_of_two(skip_zeros):
    # after a tensor's first batch its grid is fixed: the calibrator bins the tensor and its ReLU in one
    # pass, and again only where the batch reaches past the grid. Each histogram must be the one that
    # finding the batch's largest magnitude first, then binning, gives (HistogramCollector.add)
    relus = {"a_relu": "a", "a_relu_again": "a", "b_relu": "b"}
    batches = _streamed_batches(np.random.default_rng(4))
    with ThreadPoolExecutor(2) as pool:
        calibrator = Calibrator("auto", 99.9, skip_zeros, pool, chunk_elements=1000)
        for batch in batches:
            calibrator.add(batch, relus)
    expected = {name: HistogramCollector(skip_zeros) for name in ("a", "b", *relus)}
    for batch in batches:
        for name, values in batch.items():
            expected[name].add(values)
        for relu, source in relus.items():
            expected[relu].add(batch[source], relu=True)
    for name, collector in expected.items():
        got = calibrator.collectors[name]
        assert (got.width, got.top) == (collector.width, collector.top), name
        assert np.array_equal(got.hist, collector.hist), name
    assert len(expected["b"].hist) > 2048, "no grid widened: the case past the grid is not exercised"


@pytest.mark.parametrize("method", ["entropy", "minmax"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("batch_index", [0, 1])
def test_a_tensor_with_values_that_are_not_finite_is_named(method, bad, batch_index):
    batches = _streamed_batches(np.random.default_rng(5))[:2]
    batches[batch_index]["b"] = batches[batch_index]["b"].copy()
    batches[batch_index]["b"][4321] = bad
    with ThreadPoolExecutor(2) as pool:
        calibrator = Calibrator(method, None, True, pool, chunk_elements=1000)
        for earlier in batches[:batch_index]:  # the second batch: on the grid the first fixed
            calibrator.add(earlier, {"b_relu": "b"})
        with pytest.raises(ValueError, match="calibration tensor b holds (NaN|infinite) values"):
            calibrator.add(batches[batch_index], {"b_relu": "b"})
