"""camdet.engine.config_edit: batch profiles from the config and the config's rewrite."""

from __future__ import annotations

from pathlib import Path

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

import build_engine as cli
from camdet.engine import config_edit, errors, onnx_checks
from camdet.engine import contract as contracts
from tests.helpers.engine import runner


def test_profile_rule() -> None:
    assert contracts.derive_profile(64, [16, 32, 64]) == contracts.BatchProfile(1, 64, 64)
    assert contracts.derive_profile(64, [8, 16]) == contracts.BatchProfile(1, 16, 64)
    assert contracts.derive_profile(32, []) == contracts.BatchProfile(1, 32, 32)
    assert contracts.BatchProfile(1, 16, 64).shapes((3, 640, 640)) == {
        "min": [1, 3, 640, 640],
        "opt": [16, 3, 640, 640],
        "max": [64, 3, 640, 640],
    }
    with pytest.raises(errors.ProfileMismatchError, match="1 <= min <= opt <= max"):
        contracts.BatchProfile(1, 65, 64)


def test_requested_profile_and_refusal(paths: dict[str, Path]) -> None:
    contract = onnx_checks.validate_inputs(paths["onnx"], paths["config"], paths["labels"]).contract
    assert config_edit.requested_profile(contract, None, None) == contracts.BatchProfile(1, 64, 64)
    assert config_edit.requested_profile(contract, 32, None) == contracts.BatchProfile(1, 32, 32)
    assert (
        config_edit.profile_mismatch(contracts.BatchProfile(1, 64, 64), contract, paths["config"])
        is None
    )
    assert config_edit.profile_mismatch(
        contracts.BatchProfile(1, 16, 32), contract, paths["config"]
    ) == (
        f"requested profile min=1 opt=16 max=32 disagrees with {paths['config']} "
        "(max_batch_size 64, preferred_batch_size [16, 32, 64] -> min=1 opt=64 max=64); "
        "pass --update-config to rewrite the config's batch settings"
    )


def _without_batching(config: mc.ModelConfig) -> mc.ModelConfig:
    copy = mc.ModelConfig()
    copy.CopyFrom(config)
    copy.max_batch_size = 0
    del copy.dynamic_batching.preferred_batch_size[:]
    return copy


def test_update_config_round_trip(paths: dict[str, Path]) -> None:
    config = paths["config"]
    before_text = config.read_text()
    before = contracts.load_model_config(config)
    sizes = config_edit.update_config_batching(config, contracts.BatchProfile(1, 32, 48))
    assert sizes == [16, 32]
    after = contracts.load_model_config(config)
    assert after.max_batch_size == 48
    assert list(after.dynamic_batching.preferred_batch_size) == [16, 32]
    assert contracts.derive_profile(
        after.max_batch_size, after.dynamic_batching.preferred_batch_size
    ) == (contracts.BatchProfile(1, 32, 48))
    assert _without_batching(after) == _without_batching(before)
    text = config.read_text()
    comments = [line for line in before_text.splitlines() if line.startswith("#")]
    assert comments and all(line in text for line in comments)
    assert "max_queue_delay_microseconds: 1000" in text
    config_edit.update_config_batching(config, contracts.BatchProfile(1, 64, 64))
    assert config.read_text() == before_text


@pytest.mark.parametrize(
    "batching",
    [
        "dynamic_batching {\n  preferred_batch_size: 16\n  preferred_batch_size: 32\n}\n",
        "dynamic_batching {\n  max_queue_delay_microseconds: 100\n}\n",
        "",
    ],
)
def test_update_config_other_layouts(tmp_path: Path, batching: str) -> None:
    config = tmp_path / "config.pbtxt"
    config.write_text(
        f'name: "detector"\nplatform: "tensorrt_plan"\nmax_batch_size: 32\n{batching}'
    )
    config_edit.update_config_batching(config, contracts.BatchProfile(1, 8, 16))
    parsed = text_format.Parse(config.read_text(), mc.ModelConfig())
    assert parsed.max_batch_size == 16
    assert list(parsed.dynamic_batching.preferred_batch_size) == [8]
    assert ("max_queue_delay_microseconds: 100" in config.read_text()) == ("100" in batching)


def test_update_config_cli_and_ensemble_warning(repo_copy: Path) -> None:
    config = repo_copy / "detector" / "config.pbtxt"
    result = runner.invoke(
        cli.app,
        ["update-config", "--config", str(config), "--max-batch", "32", "--opt-batch", "16"],
    )
    assert result.exit_code == 0, result.output
    assert result.stdout == (
        f"{config}: profile min=1 opt=64 max=64 -> min=1 opt=16 max=32 "
        "(max_batch_size 32, preferred_batch_size [16])\n"
    )
    # (the INFO log line about the rewrite goes to stderr before the warnings): one
    # warning per ensemble that runs the detector
    for ensemble in ("detect", "detect_video"):
        assert (
            f"warning: ensemble '{ensemble}' has max_batch_size 64 > detector max_batch_size 32; "
            f"lower it in {repo_copy / ensemble / 'config.pbtxt'} (Triton requires an ensemble's "
            "max_batch_size to be at most each step's)\n"
        ) in result.stderr
    parsed = contracts.load_model_config(config)
    assert (parsed.max_batch_size, list(parsed.dynamic_batching.preferred_batch_size)) == (32, [16])
