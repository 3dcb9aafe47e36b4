"""Typed view of an upstream MapAnything `config.json` (the constructor kwargs dict).

Only the architecture that the released checkpoints use is supported: DINOv2 image encoder,
alternating-attention multi-view transformer returning intermediate features, DPT + pose
head, "raydirs+depth+pose+confidence+mask" adaptors. Anything else raises ValueError.
Defaults are those of the upstream classes (UniCeption encoders/heads, DINOv2 hub models).
"""

import math
from dataclasses import dataclass

# DINOv2 hub models: size -> (embed_dim, depth, num_heads, ffn) (dinov2 `hub/backbones.py`,
# `models/vision_transformer.py`; ViT-g uses the fused SwiGLU FFN).
DINOV2_SIZES = {
    "small": (384, 12, 6, "mlp"),
    "base": (768, 12, 12, "mlp"),
    "large": (1024, 24, 16, "mlp"),
    "giant": (1536, 40, 24, "swiglufused"),
}

SUPPORTED_ADAPTOR = "raydirs+depth+pose+confidence+mask"


@dataclass(frozen=True)
class VitConfig:
    """DINOv2 ViT hyper-parameters (after `keep_first_n_layers`)."""

    embed_dim: int
    depth: int
    num_heads: int
    ffn: str
    mlp_ratio: float = 4.0
    patch_size: int = 14
    img_size: int = 518
    init_values: float | None = 1.0
    num_register_tokens: int = 0
    interpolate_offset: float = 0.1
    interpolate_antialias: bool = False
    qkv_bias: bool = True
    proj_bias: bool = True
    ffn_bias: bool = True
    final_norm: bool = True
    data_norm_type: str = "dinov2"


@dataclass(frozen=True)
class TransformerConfig:
    """Alternating-attention multi-view transformer."""

    input_dim: int
    dim: int
    depth: int
    num_heads: int
    mlp_ratio: float
    ffn: str
    qkv_bias: bool
    qk_norm: bool
    init_values: float | None
    indices: tuple[int, ...]
    norm_intermediate: bool
    ref_view_embedding: bool


@dataclass(frozen=True)
class AdaptorConfig:
    """Output activations: value = clip(f(x), vmin, vmax) per quantity."""

    depth_mode: str
    depth_vmin: float
    depth_vmax: float
    conf_mode: str
    conf_vmin: float
    conf_vmax: float
    scale_mode: str
    scale_vmin: float
    scale_vmax: float
    trans_mode: str
    quats_normalize: bool


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to build `MapAnything`."""

    vit: VitConfig
    ray_dims: tuple[int, ...]
    depth_dims: tuple[int, ...]
    depth_scale_dims: tuple[int, ...]
    rot_dims: tuple[int, ...]
    trans_dims: tuple[int, ...]
    trans_scale_dims: tuple[int, ...]
    transformer: TransformerConfig
    use_encoder_tokens: bool
    dpt_feature_dim: int
    dpt_layer_dims: tuple[int, ...]
    dpt_hooks: tuple[int, ...]
    regressor_hidden: tuple[int, int]
    regressor_out: int
    pose_res_blocks: int
    rot_dim: int
    scale_hidden: int
    scale_layers: int
    adaptor: AdaptorConfig

    @property
    def patch_size(self) -> int:
        return self.vit.patch_size

    @property
    def dim(self) -> int:
        return self.vit.embed_dim


def _vit_config(enc: dict) -> VitConfig:
    if enc.get("encoder_str", "dinov2") != "dinov2":
        raise ValueError(f"unsupported image encoder {enc.get('encoder_str')!r}")
    final_norm = bool(enc.get("norm_returned_features", True))
    norm_type = enc.get("data_norm_type", "dinov2")
    keep = enc.get("keep_first_n_layers")
    arch = enc.get("vit_arch_override")
    if arch is not None:
        # Fixture-only key (see shared/fixtures/mapanything_tiny/README.md): explicit ViT kwargs.
        depth = int(arch["depth"])
        vit = VitConfig(
            embed_dim=int(arch["embed_dim"]), depth=depth if keep is None else min(depth, int(keep)),
            num_heads=int(arch["num_heads"]), ffn=arch.get("ffn_layer", "mlp"),
            mlp_ratio=float(arch.get("mlp_ratio", 4)), patch_size=int(arch.get("patch_size", 14)),
            img_size=int(arch.get("img_size", 518)), init_values=arch.get("init_values", 1.0),
            num_register_tokens=int(arch.get("num_register_tokens", 0)),
            interpolate_offset=float(arch.get("interpolate_offset", 0.1)),
            interpolate_antialias=bool(arch.get("interpolate_antialias", False)),
            qkv_bias=bool(arch.get("qkv_bias", True)), proj_bias=bool(arch.get("proj_bias", True)),
            ffn_bias=bool(arch.get("ffn_bias", True)), final_norm=final_norm,
            data_norm_type=norm_type,
        )
        return vit
    size = enc.get("size", "large")
    if size not in DINOV2_SIZES:
        raise ValueError(f"unknown DINOv2 size {size!r}; expected one of {sorted(DINOV2_SIZES)}")
    dim, depth, heads, ffn = DINOV2_SIZES[size]
    # The "_reg" hub models have 4 registers, antialiased pos-embed resizing and no offset.
    registers = bool(enc.get("with_registers", False))
    return VitConfig(
        embed_dim=dim, depth=depth if keep is None else min(depth, int(keep)), num_heads=heads,
        ffn=ffn, patch_size=int(enc.get("patch_size", 14)),
        num_register_tokens=4 if registers else 0,
        interpolate_offset=0.0 if registers else 0.1, interpolate_antialias=registers,
        final_norm=final_norm, data_norm_type=norm_type,
    )


def _dims(cfg: dict, default: list[int]) -> tuple[int, ...]:
    return tuple(int(d) for d in cfg.get("intermediate_dims", default))


def _transformer_config(info: dict, input_dim: int, mlp: str) -> TransformerConfig:
    if info.get("model_type") != "alternating_attention":
        raise ValueError(f"unsupported info_sharing model_type {info.get('model_type')!r}")
    if info.get("model_return_type") != "intermediate_features":
        raise ValueError("info_sharing model_return_type must be 'intermediate_features'")
    args = info["module_args"]
    if args.get("custom_positional_encoding") is not None:
        raise ValueError("custom_positional_encoding is not supported")
    if args.get("use_pe_for_non_reference_views", False):
        raise ValueError("use_pe_for_non_reference_views is not supported (random at inference)")
    indices = tuple(sorted(int(i) for i in args["indices"]))
    if len(indices) != 2:
        raise ValueError("info_sharing indices must list 2 layers (DPT takes fused features first)")
    return TransformerConfig(
        input_dim=input_dim, dim=int(args.get("dim", 768)), depth=int(args.get("depth", 12)),
        num_heads=int(args.get("num_heads", 12)), mlp_ratio=float(args.get("mlp_ratio", 4.0)),
        ffn=mlp, qkv_bias=bool(args.get("qkv_bias", True)), qk_norm=bool(args.get("qk_norm", False)),
        init_values=args.get("init_values"), indices=indices,
        norm_intermediate=bool(args.get("norm_intermediate", True)),
        ref_view_embedding=bool(args.get("distinguish_ref_and_non_ref_views", True)),
    )


def _adaptor_config(head: dict) -> AdaptorConfig:
    if head.get("adaptor_type") != SUPPORTED_ADAPTOR:
        raise ValueError(f"unsupported adaptor_type {head.get('adaptor_type')!r}; "
                         f"expected {SUPPORTED_ADAPTOR!r}")
    dense, pose, scale = head["dpt_adaptor"], head["pose_adaptor"], head["scale_adaptor"]
    if dense.get("ray_directions_mode", "linear") != "linear" or not dense.get(
            "ray_directions_normalize_to_unit_sphere", True):
        raise ValueError("only linear, unit-sphere-normalised ray directions are supported")
    if pose.get("quaternions_mode", "linear") != "linear":
        raise ValueError("only linear quaternion outputs are supported")
    return AdaptorConfig(
        depth_mode=dense["depth_mode"], depth_vmin=float(dense["depth_vmin"]),
        depth_vmax=float(dense["depth_vmax"]), conf_mode=dense["confidence_type"],
        conf_vmin=float(dense["confidence_vmin"]), conf_vmax=float(dense["confidence_vmax"]),
        scale_mode=scale["mode"], scale_vmin=float(scale.get("vmin", 0.0)),
        scale_vmax=float(scale.get("vmax", float("inf"))), trans_mode=pose["cam_trans_mode"],
        quats_normalize=bool(pose.get("quaternions_normalize", True)),
    )


def parse_config(config: dict) -> ModelConfig:
    """ModelConfig from the upstream constructor-kwargs dict (Hub `config.json` layout)."""
    vit = _vit_config(config["encoder_config"])
    geo = config["geometric_input_config"]
    head = config["pred_head_config"]
    if head.get("type") != "dpt+pose":
        raise ValueError(f"unsupported pred_head_config type {head.get('type')!r}")
    feature, regressor = head["feature_head"], head["regressor_head"]
    pose, scale = head["pose_head"], head["scale_head"]
    fdim = int(feature.get("feature_dim", 256))
    hidden = regressor.get("hidden_dims") or [fdim // 2, fdim // 2]
    return _checked(ModelConfig(
        vit=vit,
        ray_dims=_dims(geo["ray_dirs_encoder_config"], [588, 768, 1024]),
        depth_dims=_dims(geo["depth_encoder_config"], [588, 768, 1024]),
        depth_scale_dims=_dims(geo["scale_encoder_config"], [128, 256, 512]),
        rot_dims=_dims(geo["cam_rot_encoder_config"], [128, 256, 512]),
        trans_dims=_dims(geo["cam_trans_encoder_config"], [128, 256, 512]),
        trans_scale_dims=_dims(geo["scale_encoder_config"], [128, 256, 512]),
        transformer=_transformer_config(config["info_sharing_config"], vit.embed_dim,
                                        config.get("info_sharing_mlp_layer_str", "mlp")),
        use_encoder_tokens=bool(config.get("use_register_tokens_from_encoder", False)),
        dpt_feature_dim=fdim,
        dpt_layer_dims=tuple(int(d) for d in feature.get("layer_dims", [96, 192, 384, 768])),
        dpt_hooks=tuple(int(h) for h in feature.get("hooks", [0, 1, 2, 3])),
        regressor_hidden=(int(hidden[0]), int(hidden[1])),
        regressor_out=int(regressor["output_dim"]),
        pose_res_blocks=int(pose.get("num_resconv_block", 2)),
        rot_dim=int(pose.get("rot_representation_dim", 4)),
        scale_hidden=int(scale.get("hidden_dim", 196)),
        scale_layers=int(scale.get("num_mlp_layers", 2)),
        adaptor=_adaptor_config(head),
    ))


ACTIVATIONS = ("linear", "exp", "square")  # heads.activate's modes (depth, scale, translation)
CONFIDENCES = ("exp", "sigmoid")  # heads.confidence's


def _checked(cfg: ModelConfig) -> ModelConfig:
    """cfg, or ValueError naming the first value no network can be built or run with (a zero patch
    size was a ZeroDivisionError; out-of-range layer indices, a NaN or an unknown mode loaded and
    then failed every inference)."""
    vit, t, a = cfg.vit, cfg.transformer, cfg.adaptor
    sizes = {"patch_size": vit.patch_size, "img_size": vit.img_size, "embed_dim": vit.embed_dim, "depth": vit.depth,
             "num_heads": vit.num_heads, "info_sharing dim": t.dim, "info_sharing depth": t.depth,
             "info_sharing num_heads": t.num_heads, "feature_dim": cfg.dpt_feature_dim,
             "output_dim": cfg.regressor_out, "scale hidden_dim": cfg.scale_hidden,
             **{f"{name} {i}": d for name, dims in (
                 ("ray encoder dim", cfg.ray_dims), ("depth encoder dim", cfg.depth_dims),
                 ("scale encoder dim", cfg.depth_scale_dims), ("rotation encoder dim", cfg.rot_dims),
                 ("translation encoder dim", cfg.trans_dims), ("DPT layer_dims", cfg.dpt_layer_dims),
                 ("regressor hidden_dims", cfg.regressor_hidden)) for i, d in enumerate(dims)}}
    bad = [f"{name} {value}" for name, value in sizes.items() if value <= 0]
    if bad:
        raise ValueError(f"sizes must be positive: {', '.join(bad)}")
    for name, value in (("mlp_ratio", vit.mlp_ratio), ("info_sharing mlp_ratio", t.mlp_ratio)):
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be a positive number, got {value}")
    if not math.isfinite(vit.interpolate_offset):
        raise ValueError(f"interpolate_offset must be finite, got {vit.interpolate_offset}")
    if vit.num_register_tokens < 0 or cfg.pose_res_blocks < 0 or cfg.scale_layers < 0:
        raise ValueError("num_register_tokens, num_resconv_block and num_mlp_layers must not be negative")
    if not all(0 <= i < t.depth for i in t.indices):
        raise ValueError(f"info_sharing indices {list(t.indices)} must be layers of its {t.depth}")
    if len(cfg.dpt_hooks) != 4 or len(cfg.dpt_layer_dims) != 4 or not all(0 <= h < 4 for h in cfg.dpt_hooks):
        raise ValueError(f"the DPT takes 4 hooks in 0..3 and 4 layer_dims, got {list(cfg.dpt_hooks)} and "
                         f"{list(cfg.dpt_layer_dims)}")
    for name, mode, known in (("depth_mode", a.depth_mode, ACTIVATIONS), ("scale mode", a.scale_mode, ACTIVATIONS),
                              ("cam_trans_mode", a.trans_mode, ACTIVATIONS), ("confidence_type", a.conf_mode,
                                                                                 CONFIDENCES)):
        if mode not in known:
            raise ValueError(f"unknown {name} {mode!r}; expected one of {', '.join(known)}")
    for name, lo, hi in (("depth", a.depth_vmin, a.depth_vmax), ("confidence", a.conf_vmin, a.conf_vmax),
                         ("scale", a.scale_vmin, a.scale_vmax)):
        if not (lo <= hi and lo < math.inf and hi > -math.inf):  # (NaN fails)
            raise ValueError(f"{name} vmin {lo} and vmax {hi} bound no value")
    return cfg
