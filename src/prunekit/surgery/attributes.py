"""The attributes that describe a layer's shape; surgery sets them, the graph labels them."""

# How many attention heads a module has, and the widths that are a whole number of heads.
HEAD_COUNTS = ("num_heads", "num_attention_heads", "n_head", "n_heads", "num_key_value_heads",
               "num_kv_heads")
HEAD_WIDTHS = ("all_head_size", "split_size", "inner_dim", "attn_dim")

# Saved with a model so that a fresh one can be resized to the pruned shapes.
SHAPE_ATTRS = ("in_features", "out_features", "in_channels", "out_channels", "groups",
               "num_features", "num_channels", "num_groups", "normalized_shape", "embedding_dim",
               "num_parameters", "head_dim", "embed_dim", "kdim", "vdim", "nf", "nx") \
    + HEAD_COUNTS + HEAD_WIDTHS
