from pathlib import Path

import pytest
import yaml

from mer_core.config import ParamsError, load_params
from tests.conftest import REPO


def _write(tmp_path, params) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def test_repo_params_load():
    params = load_params(REPO / "params.yaml")
    assert {d.kind for d in params.ingest.datasets} == {"macro", "micro"}
    assert params.validate_.min_clips_per_class >= 1


def test_unknown_key_is_named(tmp_path):
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["ingest"]["crop_sise"] = 64
    with pytest.raises(ParamsError, match=r"unknown key 'ingest.crop_sise'"):
        load_params(_write(tmp_path, params))


def test_wrong_type_is_named(tmp_path):
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["synthesize"]["micro"]["subjects"] = "many"
    with pytest.raises(ParamsError, match=r"'synthesize.micro.subjects'"):
        load_params(_write(tmp_path, params))


def test_inverted_range_and_unknown_adapter(tmp_path):
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["synthesize"]["micro"]["amplitude"] = {"low": 0.5, "high": 0.1}
    params["ingest"]["datasets"][0]["adapter"] = "casme9"
    with pytest.raises(ParamsError) as info:
        load_params(_write(tmp_path, params))
    assert "synthesize.micro.amplitude" in str(info.value)
    assert "ingest.datasets.0.adapter" in str(info.value)


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ParamsError, match="no such params file"):
        load_params(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("ingest: [unclosed")
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_params(bad)


def test_gpu_profile_merges_over_the_sections(tmp_path):
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["profile"] = "gpu"
    loaded = load_params(_write(tmp_path, params))
    assert loaded.pretrain.encoder == "vit_small_patch16_112" and loaded.ingest.crop_size == 112
    assert loaded.pretrain.temperature == params["pretrain"]["temperature"]  # untouched keys survive


def test_unknown_profile_and_unknown_key_inside_a_profile(tmp_path):
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["profile"] = "tpu"
    with pytest.raises(ParamsError, match=r"profile 'tpu'"):
        load_params(_write(tmp_path, params))
    params["profile"] = "gpu"
    params["profiles"]["gpu"]["pretrain"]["epochz"] = 3
    with pytest.raises(ParamsError, match=r"unknown key 'pretrain.epochz'"):
        load_params(_write(tmp_path, params))


def test_finetune_needs_its_encoders_pretrained(tmp_path):
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["finetune"]["ablation"].append("contrastive_probe")  # pretrain.variants is [ma2mi]
    with pytest.raises(ParamsError, match=r"contrastive"):
        load_params(_write(tmp_path, params))


def test_an_empty_dataset_list_is_refused(tmp_path):
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["ingest"]["datasets"] = []
    with pytest.raises(ParamsError, match=r"'ingest.datasets': List should have at least 1 item"):
        load_params(_write(tmp_path, params))


def test_a_dask_executor_without_a_scheduler_address_is_refused_by_name(tmp_path):
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["executor"] = {"kind": "dask"}
    with pytest.raises(ParamsError, match=r"executor\.kind dask needs executor\.address"):
        load_params(_write(tmp_path, params))
    params["executor"]["address"] = "tcp://127.0.0.1:8786"
    assert load_params(_write(tmp_path, params)).executor.address == "tcp://127.0.0.1:8786"


def test_a_key_given_twice_is_refused_with_its_line(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text((REPO / "params.yaml").read_text().replace("\nfinetune:\n", "\nfinetune:\n  epochs: 3\n", 1))
    with pytest.raises(ParamsError, match=r"duplicate key 'epochs'.*line \d+"):
        load_params(path)


def test_profiles_may_not_move_paths(tmp_path):
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["profile"] = "gpu"
    params["profiles"]["gpu"]["paths"] = {"processed": "/scratch/processed"}
    with pytest.raises(ParamsError, match="profiles.gpu sets paths"):
        load_params(_write(tmp_path, params))


def test_paths_move_under_a_root_together():
    from mer_core.config import PathsParams

    moved = PathsParams().under(Path("/tmp/x"))
    assert moved.processed == Path("/tmp/x/data/processed") and moved.metrics == Path("/tmp/x/reports/metrics.json")


def test_lodo_needs_two_micro_data_sets(tmp_path):
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["finetune"]["protocol"] = "lodo"
    with pytest.raises(ParamsError, match=r"lodo leaves one data set out, and ingest.datasets has 1 micro data set"):
        load_params(_write(tmp_path, params))
    params["ingest"]["datasets"].append({"name": "sq", "adapter": "casme_sq", "root": "x", "kind": "long"})
    assert load_params(_write(tmp_path, params)).finetune.protocol == "lodo"
