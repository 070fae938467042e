"""The bundled dev models: rebuilt by the committed script, identical bytes; each runs its real pipeline."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import wanstudio

REPO = Path(__file__).resolve().parents[1]
BUNDLED = REPO / "src" / "wanstudio" / "orchestrator" / "catalog" / "dev"


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_build_script_reproduces_the_bundled_files(tmp_path: Path) -> None:
    import diffusers
    import transformers

    built_with = json.loads((BUNDLED / "wan22" / "ti2v-5B@2.2.0" / "dev" / "vae" / "config.json").read_text())
    if built_with["_diffusers_version"] != diffusers.__version__:
        pytest.skip(f"bundled files were built with diffusers {built_with['_diffusers_version']}")
    out = tmp_path / "dev"
    manifest = tmp_path / "models.toml"
    subprocess.run(
        [sys.executable, str(REPO / "scripts" / "build_dev_models.py"), "--out", str(out), "--manifest", str(manifest)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    assert _files(out) == _files(BUNDLED), f"rebuilt with transformers {transformers.__version__}"
    packaged = (REPO / "src" / "wanstudio" / "orchestrator" / "catalog" / "models.toml").read_text()
    block = manifest.read_text()
    assert block.strip() in packaged  # the packaged manifest holds exactly the generated entries


@pytest.mark.parametrize("model_id", ["t2v-A14B", "i2v-A14B", "ti2v-5B"])
def test_each_dev_model_runs_its_pipeline_on_the_cpu(model_id: str) -> None:
    import numpy as np
    import torch
    from diffusers import DiffusionPipeline, WanImageToVideoPipeline
    from PIL import Image

    path = wanstudio.ensure(model_id, "dev")
    loader = WanImageToVideoPipeline if model_id == "i2v-A14B" else DiffusionPipeline
    pipeline = loader.from_pretrained(path)
    pipeline.set_progress_bar_config(disable=True)
    extra = {"image": Image.new("RGB", (32, 32), (200, 40, 40))} if model_id == "i2v-A14B" else {}
    frames = pipeline(
        prompt="a red fox runs through snow",
        height=32,
        width=32,
        num_frames=5,
        num_inference_steps=2,
        generator=torch.Generator().manual_seed(0),
        output_type="np",
        **extra,
    ).frames
    assert np.asarray(frames).shape == (1, 5, 32, 32, 3)
