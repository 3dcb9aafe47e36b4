"""The upstream-layout config of a tiny MapAnything, the shape of the random-weight test fixture
(../shared/fixtures/mapanything_tiny/config.json, keys the network reads): width 64, 2 encoder
blocks, 4 transformer blocks, DPT feature width 32. Only for plumbing (RandomBackend)."""

INF = float("inf")


def _encoder(name, dims, chans, dense):
    cfg = {"name": name, "encoder_str": "dense_rep_encoder" if dense else "global_rep_encoder",
           "in_chans": chans, "enc_embed_dim": 64, "intermediate_dims": dims}
    return {**cfg, "apply_pe": False, "patch_size": 14} if dense else cfg


def tiny_config():
    """A fresh config dict (upstream MapAnything constructor kwargs)."""
    dense = {"name": "raydirs+depth+pose+confidence+mask+scale", "confidence_type": "exp",
             "confidence_vmin": 1, "confidence_vmax": INF, "depth_mode": "exp", "depth_vmin": 0,
             "depth_vmax": INF, "ray_directions_mode": "linear", "ray_directions_normalize_to_unit_sphere": True}
    pose = {"name": dense["name"], "cam_trans_mode": "linear", "quaternions_mode": "linear",
            "quaternions_normalize": True}
    scale = {"name": dense["name"], "mode": "exp", "vmin": 1e-08, "vmax": INF}
    return {
        "name": "mapanything",
        "encoder_config": {
            "encoder_str": "dinov2", "data_norm_type": "dinov2", "size": "giant", "keep_first_n_layers": 2,
            "norm_returned_features": False, "with_registers": False,
            "vit_arch_override": {"embed_dim": 64, "depth": 4, "num_heads": 4, "mlp_ratio": 4,
                                  "ffn_layer": "swiglufused", "init_values": 1.0, "img_size": 518,
                                  "patch_size": 14, "num_register_tokens": 0, "interpolate_offset": 0.1,
                                  "interpolate_antialias": False, "qkv_bias": True, "proj_bias": True,
                                  "ffn_bias": True},
        },
        "geometric_input_config": {
            "ray_dirs_encoder_config": _encoder("ray_dirs_encoder", [24, 32, 48], 3, True),
            "depth_encoder_config": _encoder("depth_encoder", [24, 32, 48], 1, True),
            "scale_encoder_config": _encoder("scale_encoder", [32, 48, 64], 1, False),
            "cam_rot_encoder_config": _encoder("cam_rot_quats_encoder", [32, 48, 64], 4, False),
            "cam_trans_encoder_config": _encoder("cam_trans_encoder", [32, 48, 64], 3, False),
        },
        "info_sharing_config": {
            "model_type": "alternating_attention", "model_return_type": "intermediate_features",
            "custom_positional_encoding": None,
            "module_args": {"dim": 64, "depth": 4, "num_heads": 4, "mlp_ratio": 4, "indices": [1, 2],
                            "init_values": 1e-05, "qkv_bias": True, "qk_norm": False, "norm_intermediate": True,
                            "distinguish_ref_and_non_ref_views": True, "custom_positional_encoding": None},
        },
        "info_sharing_mlp_layer_str": "swiglufused",
        "use_register_tokens_from_encoder": True,
        "pred_head_config": {
            "type": "dpt+pose", "adaptor_type": "raydirs+depth+pose+confidence+mask",
            "feature_head": {"feature_dim": 32, "layer_dims": [16, 32, 48, 64], "hooks": [0, 1, 2, 3],
                             "patch_size": 14},
            "regressor_head": {"input_feature_dim": 32, "output_dim": 6},
            "pose_head": {"input_feature_dim": 64, "num_resconv_block": 2, "patch_size": 14,
                          "rot_representation_dim": 4},
            "scale_head": {"input_feature_dim": 64, "output_dim": 1},
            "dpt_adaptor": dense, "pose_adaptor": pose, "scale_adaptor": scale,
        },
    }
