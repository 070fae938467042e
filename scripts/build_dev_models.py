#!/usr/bin/env python
"""Build the tiny, randomly initialised "dev" variants of the WAN 2.2 models.

Each dev variant is a complete diffusers pipeline folder that mirrors the layout of
the real Hugging Face repos (same pipeline class, same component names and classes
in ``model_index.json``, same scheduler class and scheduler/pipeline config values),
but with tiny architectures and random weights, so that the whole stack (loading,
text encoding, two-expert denoising, VAE decode) can run on CPU in seconds.

    Wan-AI/Wan2.2-T2V-A14B-Diffusers  -> wan22/t2v-A14B@2.2.0/dev
    Wan-AI/Wan2.2-I2V-A14B-Diffusers  -> wan22/i2v-A14B@2.2.0/dev
    Wan-AI/Wan2.2-TI2V-5B-Diffusers   -> wan22/ti2v-5B@2.2.0/dev

Nothing is downloaded: every component (including a small T5-style Unigram
tokenizer whose vocabulary is counted from a built-in corpus) is constructed
locally from configs.

The output is byte-for-byte deterministic (fixed seeds, no timestamps), and the
script finally rewrites the generated block of the packaged manifest
``src/wanstudio/orchestrator/catalog/models.toml`` (size + sha256 of every file).

Usage::

    python scripts/build_dev_models.py [--out DIR] [--manifest FILE | --no-manifest]
"""

from __future__ import annotations

import os

# Nothing may come from the Hub: everything below is built from local configs.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import argparse  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import zlib  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO_ROOT / "src" / "wanstudio" / "orchestrator" / "catalog" / "dev"
DEFAULT_MANIFEST = REPO_ROOT / "src" / "wanstudio" / "orchestrator" / "catalog" / "models.toml"

FAMILY = "wan22"
VARIANT = "dev"
BASE_SEED = 20250728  # Wan 2.2 release date; any fixed value works

BEGIN_MARKER = "# BEGIN generated dev variants (scripts/build_dev_models.py)"
END_MARKER = "# END generated dev variants"

# --------------------------------------------------------------------------------------
# Tokenizer
# --------------------------------------------------------------------------------------

# Small built-in English corpus (video-prompt flavoured) for the tokenizer.
CORPUS = """
A cat walks across a sunny garden while birds fly above the trees.
The camera slowly pans over a city skyline at night with bright neon lights.
An astronaut rides a horse on the surface of the moon, cinematic lighting.
Two friends laugh together on a wooden bench in a quiet park during autumn.
A golden retriever runs along the beach as waves crash against the shore.
Close-up shot of a steaming cup of coffee on a rustic kitchen table.
A red sports car drives fast through a winding mountain road at sunset.
Aerial view of a green forest with a river flowing through the valley.
A young woman in a white dress dances in the rain on an empty street.
Snow falls gently over a small village with warm lights in every window.
A chef chops fresh vegetables in a busy restaurant kitchen, shallow depth of field.
The old lighthouse stands on a rocky cliff while a storm approaches from the sea.
A child blows soap bubbles in the backyard on a bright summer afternoon.
Time-lapse of clouds moving quickly over a desert with tall red rocks.
A panda eats bamboo in a misty bamboo forest, high quality, ultra detailed.
A robot walks through a futuristic city filled with flying cars and holograms.
Slow motion of a drop of water falling into a still blue pool.
A man plays the guitar by a campfire under a sky full of stars.
The train travels across a long bridge above a deep canyon in the morning light.
A butterfly lands on a purple flower in a meadow, macro photography.
Fireworks explode over the harbor while boats float on the calm water.
A dragon flies over snowy mountains, epic fantasy style, dramatic clouds.
Tourists walk through a crowded market full of colorful fruits and spices.
A small boat sails on a lake surrounded by pine trees and distant hills.
The dancer spins on the stage as the spotlight follows her every move.
A knight in shining armor rides into a medieval castle at dawn.
Leaves fall from the trees and drift slowly in the cold autumn wind.
A squirrel gathers nuts on a branch, natural light, documentary footage.
Waves roll onto a tropical island with palm trees and white sand.
A hot air balloon rises above green fields in the early morning fog.
Bright tones, overexposed, static, blurred details, subtitles, style, works, paintings, images.
Worst quality, low quality, JPEG compression residue, ugly, incomplete, extra fingers.
Poorly drawn hands, poorly drawn faces, deformed, disfigured, misshapen limbs, fused fingers.
Still picture, messy background, three legs, many people in the background, walking backwards.
The girl smiles and waves at the camera, then turns around and walks away.
A black and white film scene of a detective standing under a street lamp.
Underwater shot of a sea turtle swimming over a vibrant coral reef.
A farmer drives a tractor across a wheat field during the golden hour.
The wind moves through tall grass while a fox watches from the edge of the woods.
A cozy library with wooden shelves, soft lamp light and a sleeping cat.
Rain drops slide down a window as city traffic blurs in the background.
An eagle soars high above a canyon, tracking shot, smooth camera motion.
A group of people ride bicycles through a park in the spring sunshine.
The volcano erupts at night and glowing lava flows down the mountain side.
A ballerina practices in an empty studio with large windows and white walls.
Children build a sandcastle on the beach while seagulls fly overhead.
A vintage car parked in front of a diner with a glowing neon sign.
The northern lights dance over a frozen lake in the quiet arctic night.
A monk walks slowly through an ancient temple filled with candles.
A horse gallops across an open plain with mountains in the far distance.
"""

TOKENIZER_VOCAB_SIZE = 1024  # incl. specials and sentinels (the real UMT5 one has ~256k)
TOKENIZER_EXTRA_IDS = 24  # T5 sentinel tokens <extra_id_N> (real UMT5: 300)
MAX_SEQUENCE_LENGTH = 512  # real tokenizer model_max_length; the pipelines pad to this


def unigram_vocab(lines: list[str], size: int, max_piece_length: int = 12) -> list[tuple[str, float]]:
    """A deterministic Unigram vocabulary (piece, log-prob) from a small corpus.

    (tokenizers' UnigramTrainer is not reproducible run to run: its EM scores differ in
    the last bits and ties come out in hash order, so we count pieces ourselves.)
    Pieces are SentencePiece-style ("\u2581" marks a word start): every character of the
    corpus, every whole word, then the most frequent substrings; the score of a piece is
    the log of its relative substring frequency.
    """
    words: dict[str, int] = {}
    for line in lines:
        for word in line.split():
            key = "\u2581" + word
            words[key] = words.get(key, 0) + 1
    counts: dict[str, int] = {}
    for word, freq in words.items():
        for i in range(len(word)):
            for j in range(i + 1, min(len(word), i + max_piece_length) + 1):
                piece = word[i:j]
                counts[piece] = counts.get(piece, 0) + freq
    chars = sorted(p for p in counts if len(p) == 1)
    # whole words without trailing punctuation ("\u2581moon" out of "\u2581moon.")
    stems = {"\u2581" + w[1:].rstrip(".,;:!?") for w in words}
    whole = sorted((w for w in stems if 1 < len(w) <= max_piece_length), key=lambda w: (-counts[w], w))
    chosen = list(dict.fromkeys(chars + whole))
    if len(chosen) > size:
        chosen = chars + [w for w in whole if w not in chars][: size - len(chars)]
    rest = sorted(
        (p for p in counts if len(p) > 1 and counts[p] > 1 and p not in set(chosen)),
        key=lambda p: (-counts[p] * len(p), p),
    )
    chosen += rest[: max(0, size - len(chosen))]
    total = sum(counts[p] for p in chosen)
    scored = [(p, round(math.log(counts[p] / total), 6)) for p in chosen]
    scored.sort(key=lambda item: (-item[1], item[0]))
    return scored


def build_tokenizer():
    """A small T5-style Unigram tokenizer wrapped in transformers' T5Tokenizer.

    Layout follows T5/UMT5: <pad>=0, </s>=1, <unk>=2, regular pieces, then the
    <extra_id_N> sentinels in reverse order at the end; the post-processor appends </s>.
    """
    from transformers import T5Tokenizer

    lines = [line.strip() for line in CORPUS.strip().splitlines() if line.strip()]
    n_regular = TOKENIZER_VOCAB_SIZE - 3 - TOKENIZER_EXTRA_IDS
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    vocab += unigram_vocab(lines, n_regular)
    vocab += [(f"<extra_id_{i}>", 0.0) for i in range(TOKENIZER_EXTRA_IDS - 1, -1, -1)]
    tokenizer = T5Tokenizer(
        vocab=vocab,
        extra_ids=TOKENIZER_EXTRA_IDS,
        model_max_length=MAX_SEQUENCE_LENGTH,
    )
    assert tokenizer.pad_token_id == 0 and tokenizer.eos_token_id == 1 and tokenizer.unk_token_id == 2
    assert len(tokenizer) == len(vocab), (len(tokenizer), len(vocab))
    return tokenizer


# --------------------------------------------------------------------------------------
# Components
# --------------------------------------------------------------------------------------


SHARED = "shared"
"""Seed namespace of components that the real repos share between models (so the store keeps them once)."""


def seed_for(model_id: str, component: str) -> int:
    """Stable per-component seed (so e.g. transformer and transformer_2 differ)."""
    return BASE_SEED + zlib.crc32(f"{model_id}/{component}".encode())


def build_text_encoder(model_id: str, vocab_size: int):
    """Tiny UMT5 encoder (real: google/umt5-xxl, d_model 4096, 24 layers, 64 heads)."""
    from transformers import UMT5Config, UMT5EncoderModel

    config = UMT5Config(
        vocab_size=vocab_size,
        d_model=32,
        d_kv=16,
        d_ff=64,
        num_layers=2,
        num_decoder_layers=2,
        num_heads=2,
        relative_attention_num_buckets=32,
        relative_attention_max_distance=128,
        dropout_rate=0.1,
        layer_norm_epsilon=1e-6,
        initializer_factor=1.0,
        feed_forward_proj="gated-gelu",
        is_encoder_decoder=True,
        use_cache=True,
        tokenizer_class="T5Tokenizer",
        tie_word_embeddings=False,
        scalable_attention=True,
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
    )
    torch.manual_seed(seed_for(SHARED, "text_encoder"))  # the real repos share one UMT5
    model = UMT5EncoderModel(config)
    return model.eval().to(torch.float32)


TEXT_DIM = 32  # == text encoder d_model (real: 4096)


def build_transformer(model_id: str, component: str, in_channels: int, out_channels: int):
    """Tiny WanTransformer3DModel. Real A14B experts: 40 heads x 128, 40 layers, ffn 13824;
    real TI2V-5B: 24 heads x 128, 30 layers, ffn 14336."""
    from diffusers import WanTransformer3DModel

    torch.manual_seed(seed_for(model_id, component))
    model = WanTransformer3DModel(
        patch_size=(1, 2, 2),
        num_attention_heads=2,
        attention_head_dim=12,  # rope splits it into t/h/w = 4/4/4
        in_channels=in_channels,
        out_channels=out_channels,
        text_dim=TEXT_DIM,
        freq_dim=256,
        ffn_dim=48,
        num_layers=2,
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
        eps=1e-6,
        image_dim=None,  # Wan 2.2 has no CLIP image conditioning
        added_kv_proj_dim=None,
        rope_max_seq_len=1024,
        pos_embed_seq_len=None,
    )
    return model.eval()


def build_vae_21(model_id: str):
    """Wan 2.1 VAE (used by both A14B models): z_dim 16, 8x spatial / 4x temporal.
    Real: base_dim 96, dim_mult [1,2,4,4], num_res_blocks 2."""
    from diffusers import AutoencoderKLWan

    torch.manual_seed(seed_for(SHARED, "vae-2.1"))  # T2V and I2V share the Wan 2.1 VAE
    model = AutoencoderKLWan(
        base_dim=4,
        z_dim=16,
        dim_mult=[1, 2, 4, 4],
        num_res_blocks=1,
        attn_scales=[],
        temperal_downsample=[False, True, True],
        dropout=0.0,
        # latents_mean / latents_std: the real Wan 2.1 statistics (diffusers defaults)
        is_residual=False,
        in_channels=3,
        out_channels=3,
        patch_size=None,
        scale_factor_temporal=4,
        scale_factor_spatial=8,
    )
    return model.eval()


# Wan 2.2 VAE latent statistics (Wan2.2 wan/modules/vae2_2.py). They only normalise the
# latents; with random weights the exact values do not matter.
WAN22_LATENTS_MEAN = [
    -0.2289, -0.0052, -0.1323, -0.2339, -0.2799, 0.0174, 0.1838, 0.1557,
    -0.1382, 0.0542, 0.2813, 0.0891, 0.1570, -0.0098, 0.0375, -0.1825,
    -0.2246, -0.1207, -0.0698, 0.5109, 0.2665, -0.2108, -0.2158, 0.2502,
    -0.2055, -0.0322, 0.1109, 0.1567, -0.0729, 0.0899, -0.2799, -0.1230,
    -0.0313, -0.1649, 0.0117, 0.0723, -0.2839, -0.2083, -0.0520, 0.3748,
    0.0152, 0.1957, 0.1433, -0.2944, 0.3573, -0.0548, -0.1681, -0.0667,
]  # fmt: skip
WAN22_LATENTS_STD = [
    0.4765, 1.0364, 0.4514, 1.1677, 0.5313, 0.4990, 0.4818, 0.5013,
    0.8158, 1.0344, 0.5894, 1.0901, 0.6885, 0.6165, 0.8454, 0.4978,
    0.5759, 0.3523, 0.7135, 0.6804, 0.5833, 1.4146, 0.8986, 0.5659,
    0.7069, 0.5338, 0.4889, 0.4917, 0.4069, 0.4999, 0.6866, 0.4093,
    0.5709, 0.6065, 0.6415, 0.4944, 0.5726, 1.2042, 0.5458, 1.6887,
    0.3971, 1.0600, 0.3943, 0.5537, 0.5444, 0.4089, 0.7468, 0.7744,
]  # fmt: skip


def build_vae_22(model_id: str):
    """Wan 2.2 VAE (TI2V-5B): z_dim 48, residual blocks, 2x2 pixel patchify -> 16x spatial.
    Real: base_dim 160, decoder_base_dim 256, dim_mult [1,2,4,4], num_res_blocks 2."""
    from diffusers import AutoencoderKLWan

    torch.manual_seed(seed_for(model_id, "vae"))
    model = AutoencoderKLWan(
        base_dim=2,  # keeps the real encoder < decoder width asymmetry (160 / 256)
        decoder_base_dim=4,
        z_dim=48,
        dim_mult=[1, 2, 4, 4],
        num_res_blocks=1,
        attn_scales=[],
        temperal_downsample=[False, True, True],
        dropout=0.0,
        latents_mean=WAN22_LATENTS_MEAN,
        latents_std=WAN22_LATENTS_STD,
        is_residual=True,
        in_channels=12,
        out_channels=12,
        patch_size=2,
        scale_factor_temporal=4,
        scale_factor_spatial=16,
    )
    return model.eval()


def build_scheduler(flow_shift: float):
    from diffusers import UniPCMultistepScheduler

    return UniPCMultistepScheduler(
        prediction_type="flow_prediction",
        use_flow_sigmas=True,
        num_train_timesteps=1000,
        flow_shift=flow_shift,
    )


# --------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DevModel:
    model_id: str
    hub_repo: str  # the real repo this one mirrors
    pipeline: str  # "WanPipeline" | "WanImageToVideoPipeline"
    in_channels: int
    out_channels: int
    two_experts: bool
    boundary_ratio: float | None
    expand_timesteps: bool
    flow_shift: float
    vae: str  # "2.1" | "2.2"
    shard_transformer: bool = False


MODELS = [
    DevModel(
        model_id="t2v-A14B@2.2.0",
        hub_repo="Wan-AI/Wan2.2-T2V-A14B-Diffusers",
        pipeline="WanPipeline",
        in_channels=16,
        out_channels=16,
        two_experts=True,
        boundary_ratio=0.875,
        expand_timesteps=False,
        flow_shift=3.0,
        vae="2.1",
        shard_transformer=True,
    ),
    DevModel(
        model_id="i2v-A14B@2.2.0",
        hub_repo="Wan-AI/Wan2.2-I2V-A14B-Diffusers",
        pipeline="WanImageToVideoPipeline",
        in_channels=36,  # 16 noisy latents + 4 mask + 16 first-frame condition latents
        out_channels=16,
        two_experts=True,
        boundary_ratio=0.9,
        expand_timesteps=False,
        flow_shift=5.0,
        vae="2.1",
    ),
    DevModel(
        model_id="ti2v-5B@2.2.0",
        hub_repo="Wan-AI/Wan2.2-TI2V-5B-Diffusers",
        pipeline="WanPipeline",
        in_channels=48,
        out_channels=48,
        two_experts=False,
        boundary_ratio=None,
        expand_timesteps=True,
        flow_shift=5.0,
        vae="2.2",
    ),
]

# Shard size for the sharded transformer: small enough to give several shards
# (transformer/diffusion_pytorch_model.safetensors.index.json + N shard files).
TRANSFORMER_MAX_SHARD_SIZE = 48 * 1024  # bytes


def build_pipeline(spec: DevModel, tokenizer):
    import diffusers

    text_encoder = build_text_encoder(spec.model_id, vocab_size=len(tokenizer))
    transformer = build_transformer(spec.model_id, "transformer", spec.in_channels, spec.out_channels)
    transformer_2 = (
        build_transformer(spec.model_id, "transformer_2", spec.in_channels, spec.out_channels)
        if spec.two_experts
        else None
    )
    vae = build_vae_21(spec.model_id) if spec.vae == "2.1" else build_vae_22(spec.model_id)
    scheduler = build_scheduler(spec.flow_shift)
    kwargs = dict(
        tokenizer=tokenizer,
        text_encoder=text_encoder,
        vae=vae,
        scheduler=scheduler,
        transformer=transformer,
        transformer_2=transformer_2,
        boundary_ratio=spec.boundary_ratio,
        expand_timesteps=spec.expand_timesteps,
    )
    if spec.pipeline == "WanImageToVideoPipeline":
        # Wan 2.2 I2V has no CLIP image encoder: model_index.json lists both as [null, null].
        kwargs.update(image_encoder=None, image_processor=None)
    return getattr(diffusers, spec.pipeline)(**kwargs)


def save_pipeline(spec: DevModel, pipe, folder: Path) -> None:
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    pipe.save_pretrained(folder, safe_serialization=True)
    if spec.shard_transformer:
        shutil.rmtree(folder / "transformer")
        pipe.transformer.save_pretrained(
            folder / "transformer", safe_serialization=True, max_shard_size=TRANSFORMER_MAX_SHARD_SIZE
        )
        assert (folder / "transformer" / "diffusion_pytorch_model.safetensors.index.json").is_file()
    # The real repos name the tokenizer class "T5TokenizerFast"; in transformers 5 that name
    # is an alias of T5Tokenizer (tokenizers backend), and diffusers writes the concrete
    # class name, so restore the real repo's spelling.
    index_path = folder / "model_index.json"
    index = json.loads(index_path.read_text())
    index["tokenizer"] = ["transformers", "T5TokenizerFast"]
    index_path.write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")


# --------------------------------------------------------------------------------------
# Manifest
# --------------------------------------------------------------------------------------


def list_files(folder: Path) -> list[dict]:
    entries = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = path.relative_to(folder).as_posix()
        data = path.read_bytes()
        entry = {"path": rel, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        if "/" in rel:
            entry["component"] = rel.split("/", 1)[0]
        entries.append(entry)
    entries.sort(key=lambda e: e["path"])
    return entries


def render_block(files_by_model: dict[str, list[dict]]) -> str:
    lines = [BEGIN_MARKER]
    for model_id, files in files_by_model.items():
        lines.append(f'[models."{model_id}".variants.{VARIANT}]')
        lines.append('dtype = "float32"')
        lines.append("files = [")
        for f in files:
            item = f'{{ path = {json.dumps(f["path"])}, size = {f["size"]}, sha256 = "{f["sha256"]}"'
            if "component" in f:
                item += f', component = {json.dumps(f["component"])}'
            lines.append(f"  {item} }},")
        lines.append("]")
        lines.append("")
    if lines[-1] == "":
        lines.pop()
    lines.append(END_MARKER)
    return "\n".join(lines) + "\n"


def write_manifest(manifest: Path, block: str) -> str:
    """Replace the text between the markers (inclusive) with `block`; returns the action."""
    if not manifest.exists():
        manifest.parent.mkdir(parents=True, exist_ok=True)
        manifest.write_text(block)
        return "created"
    text = manifest.read_text()
    lines = text.splitlines(keepends=True)
    stripped = [line.rstrip("\r\n") for line in lines]
    if BEGIN_MARKER in stripped and END_MARKER in stripped[stripped.index(BEGIN_MARKER) :]:
        begin = stripped.index(BEGIN_MARKER)
        end = begin + stripped[begin:].index(END_MARKER)
        new_text = "".join(lines[:begin]) + block + "".join(lines[end + 1 :])
        action = "updated"
    else:
        sep = "" if not text or text.endswith("\n\n") else ("\n" if text.endswith("\n") else "\n\n")
        new_text = text + sep + block
        action = "appended"
    if new_text != text:
        manifest.write_text(new_text)
    else:
        action = "unchanged"
    return action


# --------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output root (default: {DEFAULT_OUT})")
    parser.add_argument("--manifest", type=Path, default=DEFAULT_MANIFEST, help="models.toml to update")
    parser.add_argument("--no-manifest", action="store_true", help="do not touch models.toml")
    args = parser.parse_args(argv)

    import diffusers
    import transformers

    diffusers.utils.logging.set_verbosity_error()
    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    torch.use_deterministic_algorithms(True)

    tokenizer = build_tokenizer()
    files_by_model: dict[str, list[dict]] = {}
    for spec in MODELS:
        folder = args.out / FAMILY / spec.model_id / VARIANT
        pipe = build_pipeline(spec, tokenizer)
        save_pipeline(spec, pipe, folder)
        files = list_files(folder)
        files_by_model[spec.model_id] = files
        total = sum(f["size"] for f in files)
        print(f"{spec.model_id}: {len(files)} files, {total / 1e6:.2f} MB -> {folder}")

    grand_total = sum(f["size"] for files in files_by_model.values() for f in files)
    print(f"total: {grand_total / 1e6:.2f} MB")
    if not args.no_manifest:
        action = write_manifest(args.manifest, render_block(files_by_model))
        print(f"manifest {action}: {args.manifest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
