"""Tiny TVQ&RAP options for fast CPU tests (GroupNorm(32) needs widths that are multiples of 32).

The tokenizer and the SR net share the generator/quantiser options, so a tiny tokenizer checkpoint loads into a
tiny SR net (HR img_size = 4 x LR img_size).
"""
SHARED = dict(structure_ch=32, struct_mid_ch=32, emb_dim=64, codebook_size=64, dec_ch=(32, 32, 32), gen_depth=2,
              num_heads=2, window_size=4)
TINY_TOKENIZER = dict(SHARED, enc_ch=(32, 32, 32, 64, 64), latent_mid_ch=(32, 32), aux_ch=(32, 32),
                      enc_depths=(2, 2), img_size=64)  # HR inputs: multiples of 64
TINY_SR = dict(SHARED, lq_ch=(32, 32), low_ch=32, lq_depths=(2,), fuse_depth=2, ft_depths=(2,),
               img_size=16)  # LR inputs: multiples of 16
