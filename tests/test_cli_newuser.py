"""A new user's first hour with `devicemap plan`: messages that say what is wrong and what helps."""

from __future__ import annotations

import json
from pathlib import Path

import devicemap
import pytest
from devicemap.cli import main


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["plan", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_a_config_json_given_as_the_checkpoint_is_named_as_json(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"architectures": ["LlamaForCausalLM"], "model_type": "llama"}, indent=2))
    code, out, err = run(capsys, str(config))
    assert code == 2
    assert out == ""
    assert f"error: {config}: is a JSON file, not safetensors" in err
    assert "header length" not in err
    with pytest.raises(ValueError, match="is a JSON file, not safetensors"):
        devicemap.tensor_sizes(str(config))
