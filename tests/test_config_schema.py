"""The config holds each fact once: the schema types every key and holds no value, conf/ gives every value
once (the precisions share conf/export/base.yaml), model.root follows model.file unless set, and the
combinations that cannot work are refused by key."""
from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest
import yaml
from omegaconf import MISSING

from helpers.paths import ROOT
from stages.pipeline import config, schema


def _schema_classes():
    seen, todo = [], [schema.PipelineConfig, *schema.BACKEND_SCHEMAS.values()]
    while todo:
        cls = todo.pop()
        if cls in seen:
            continue
        seen.append(cls)
        todo += [f.default_factory for f in dataclasses.fields(cls)
                 if dataclasses.is_dataclass(f.default_factory)]
    return seen


@pytest.mark.parametrize("cls", _schema_classes(), ids=lambda cls: cls.__name__)
def test_the_schema_types_each_key_and_holds_no_value(cls):
    """A literal default here would repeat conf/ (or drift from it, as opt_batch_size once did)."""
    for f in dataclasses.fields(cls):
        if f.default is dataclasses.MISSING:  # a section: built from its own schema, no value of its own
            assert dataclasses.is_dataclass(f.default_factory), (cls.__name__, f.name)
        else:
            assert f.default == MISSING, f"{cls.__name__}.{f.name} holds {f.default!r}: give it in conf/"


@pytest.mark.parametrize("backend", schema.BACKENDS)
def test_conf_gives_every_key_of_each_backend_a_value(backend):
    cfg = config.load([f"backend={backend}"])
    assert set(cfg.backend) == {f.name for f in dataclasses.fields(schema.BACKEND_SCHEMAS[backend])}


CHOICE_KEYS = {**schema.choice_keys(schema.PipelineConfig),
               **{key: choices for name in ("open", "tao") for key, choices in
                  schema.choice_keys(schema.BACKEND_SCHEMAS[name], "backend.").items()}}


@pytest.mark.parametrize("key", sorted(CHOICE_KEYS))
def test_a_key_typed_with_its_choices_refuses_any_other_value_by_name(key):
    # the schema's one_of fields carry their choices (choices.py holds each tuple once); validate checks them all
    backend = ["backend=tao"] if key == "backend.export_format" else []
    shown = ", ".join("null" if c is None else str(c) for c in CHOICE_KEYS[key])
    with pytest.raises(config.ConfigError, match=f"config key {key} is 'bogus'; expected one of {shown}$"):
        config.load([*backend, f"{key}=bogus"])


def test_every_choice_of_choices_py_types_a_schema_key():
    from stages.pipeline import choices

    typed = {id(c) for c in CHOICE_KEYS.values()}
    untyped = [name for name, value in vars(choices).items() if name.isupper() and isinstance(value, tuple)
               and id(value) not in typed and name not in ("BACKENDS", "EXPORT_FORMATS")]
    assert untyped == []  # BACKENDS picks the backend's schema itself; EXPORT_FORMATS is etlt's refusal


def test_each_precision_says_only_what_differs_from_the_shared_base():
    folder = ROOT / "conf" / "export"
    base = yaml.safe_load((folder / "base.yaml").read_text())
    own = {name: yaml.safe_load((folder / f"{name}.yaml").read_text()) for name in schema.DATA_TYPES}
    assert {name: sorted(set(keys) - {"defaults"}) for name, keys in own.items()} == {
        "fp32": ["data_type"], "fp16": ["data_type"], "int8": ["cal_source", "data_type"]}
    for name in schema.DATA_TYPES:
        composed = config.load([f"export={name}"]).export
        assert set(composed) == set(base)
        assert composed.data_type == name


def test_the_base_of_the_precisions_is_no_precision_itself():
    with pytest.raises(schema.ConfigError, match="config key export.data_type has no value"):
        config.load(["export=base"])


def test_a_typo_in_a_backend_key_is_refused_with_what_that_backend_reads():
    with pytest.raises(schema.ConfigError, match=r"config key backend.calibration_methd is not read by backend "
                                                 r"open; did you mean `calibration_method`\? "
                                                 r"\(it reads calibration_method, key_env, name, "):
        config.load(["+backend.calibration_methd=minmax"])


def test_a_typo_in_a_key_is_refused_with_the_key_it_is_near():
    # Hydra's advice for `-S convert.max_batchsize=4` is to add `+`; with it, our check names the key meant
    with pytest.raises(schema.ConfigError, match=r"config key convert.max_batchsize: .*; did you mean `max_batch_size`\?"):
        config.load(["+convert.max_batchsize=4"])


def test_a_typo_in_a_section_name_is_refused_with_the_section_it_is_near():
    with pytest.raises(schema.ConfigError, match=r"config key evaluat: .*; did you mean `evaluate`\?"):
        config.load(["+evaluat.max_map_drop=0.1"])


def test_a_key_near_no_known_key_is_refused_without_a_guess():
    with pytest.raises(schema.ConfigError, match=r"config key convert.zzz: Key 'zzz' not in 'ConvertSection'$"):
        config.load(["+convert.zzz=1"])


def test_a_key_the_schema_lacks_in_params_yaml_is_refused_by_name(tmp_path):
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    del params["convert"]["workspace_mib"]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    with pytest.raises(schema.ConfigError, match="config key convert.workspace_mib has no value"):
        config.load(params=tmp_path / "params.yaml")


def test_model_root_is_the_folder_of_model_file_unless_set():
    assert config.load([]).model.root == "models/sample"
    assert config.load(["model.file=models/lpd/LPDNet_usa_pruned_tao5.onnx"]).model.root == "models/lpd"
    assert config.load(["model.file=models/lpd/model.onnx", "model.root=models"]).model.root == "models"


def test_dvcs_own_composition_finds_the_resolver_model_root_uses(tmp_path):
    """`dvc exp run -S` composes with dvc.utils.hydra.compose_and_dump, in DVC's process, which never
    imports the project: the resolver comes from hydra_plugins/ at the repository's root."""
    script = ("import sys; from dvc.utils.hydra import compose_and_dump; "
              f"compose_and_dump(sys.argv[1], {str(ROOT / 'conf')!r}, None, 'config', {str(ROOT)!r}, "
              "['model.file=models/lpd/LPDNet_usa_pruned_tao5.onnx'])")
    out = tmp_path / "params.yaml"
    subprocess.run([sys.executable, "-c", script, str(out)], cwd=tmp_path, check=True, capture_output=True)
    assert yaml.safe_load(out.read_text())["model"]["root"] == "models/lpd"


def test_tao_3_and_4s_etlt_export_is_refused_with_the_reason():
    with pytest.raises(schema.ConfigError, match="backend.export_format is etlt .* evaluate judges the engine "
                                                 "against the exported fp32 ONNX"):
        config.load(["backend=tao", "backend.export_format=etlt"])


def test_the_spec_section_no_longer_repeats_the_dataset():
    assert set(config.load([]).spec) == {"set", "container_prefixes"}
