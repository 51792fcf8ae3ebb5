# coding=utf-8
"""COCO-LM configuration for Hugging Face `transformers`.

Written by `coco export` (the cocolm project) next to modeling_cocolm.py; load the folder with
`AutoModel.from_pretrained(folder, trust_remote_code=True)`. Every field mirrors a key of the coco model
configuration, so the modeling code computes exactly what coco computes.
"""

try:  # transformers >= 5
    from transformers import PreTrainedConfig as _BaseConfig
except ImportError:  # transformers 4.x
    from transformers import PretrainedConfig as _BaseConfig


class COCOLMConfig(_BaseConfig):
    r"""
    Args:
        vocab_size: number of tokens.
        embedding_size: width E of the token and position tables (a Linear(E, hidden) follows when it differs
            from hidden_size); defaults to hidden_size.
        hidden_size, num_hidden_layers, num_attention_heads: width d, depth and heads of the encoder.
        attention_head_size: width of one head (defaults to hidden_size / num_attention_heads).
        intermediate_size: width of the feed-forward block.
        hidden_act: activation of the feed-forward block ("gelu" is the exact erf form coco uses).
        hidden_dropout_prob: dropout on each block's output before the residual sum.
        attention_probs_dropout_prob: dropout on the attention probabilities.
        embedding_dropout_prob: dropout after the embeddings (defaults to hidden_dropout_prob).
        activation_dropout_prob: dropout after the feed-forward activation.
        max_position_embeddings: rows of the learned absolute position table.
        layer_norm_eps: epsilon of every LayerNorm.
        pre_norm: True for x + f(LN(x)) blocks, False for LN(x + f(x)) (BERT / ELECTRA).
        embedding_layer_norm: a LayerNorm after the embedding sum.
        final_layer_norm: a LayerNorm after the last layer (pre-norm stacks).
        qkv_bias, out_bias: biases of the q/k/v and output projections of the attention.
        rel_pos_buckets: buckets of the T5-style relative-position bias shared by all layers (0: none).
        max_rel_pos: the distance at which the logarithmic buckets end.
        binary_head_label: which class the stored binary head's positive logit means, "original" (COCO-LM's
            copy head) or "replaced" (replaced-token detection); the pretraining model's `logits` are always
            replaced-token logits, like ElectraForPreTraining's.
        clm_head: the pretraining model has the corrective-LM head (a vocabulary bias on the tied embedding).
        scl_dim: width of the sequence-contrastive head of the pretraining model (0: none).
        contrastive_theta: the pretraining model has the learnable contrastive log-scale.
        generator_head: "bert" (dense, GELU, LayerNorm, tied output embedding + bias) or "linear".
        classifier_dropout: dropout of the classification heads (defaults to hidden_dropout_prob).
    """

    model_type = "cocolm"

    def __init__(
        self,
        vocab_size=30522,
        embedding_size=None,
        hidden_size=768,
        num_hidden_layers=12,
        num_attention_heads=12,
        attention_head_size=None,
        intermediate_size=3072,
        hidden_act="gelu",
        hidden_dropout_prob=0.1,
        attention_probs_dropout_prob=0.1,
        embedding_dropout_prob=None,
        activation_dropout_prob=0.0,
        max_position_embeddings=512,
        layer_norm_eps=1e-5,
        initializer_range=0.02,
        pad_token_id=0,
        pre_norm=False,
        embedding_layer_norm=True,
        final_layer_norm=False,
        qkv_bias=True,
        out_bias=True,
        rel_pos_buckets=32,
        max_rel_pos=128,
        binary_head_label="original",
        clm_head=True,
        scl_dim=0,
        contrastive_theta=False,
        generator_head="bert",
        classifier_dropout=None,
        **kwargs,
    ):
        super().__init__(pad_token_id=pad_token_id, **kwargs)
        self.vocab_size = vocab_size
        self.embedding_size = hidden_size if embedding_size is None else embedding_size
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        if attention_head_size is None:
            if hidden_size % num_attention_heads != 0:
                raise ValueError(
                    f"hidden_size ({hidden_size}) is not a multiple of num_attention_heads ({num_attention_heads}); "
                    "set attention_head_size"
                )
            attention_head_size = hidden_size // num_attention_heads
        self.attention_head_size = attention_head_size
        self.intermediate_size = intermediate_size
        self.hidden_act = hidden_act
        self.hidden_dropout_prob = hidden_dropout_prob
        self.attention_probs_dropout_prob = attention_probs_dropout_prob
        self.embedding_dropout_prob = hidden_dropout_prob if embedding_dropout_prob is None else embedding_dropout_prob
        self.activation_dropout_prob = activation_dropout_prob
        self.max_position_embeddings = max_position_embeddings
        self.layer_norm_eps = layer_norm_eps
        self.initializer_range = initializer_range
        self.pre_norm = pre_norm
        self.embedding_layer_norm = embedding_layer_norm
        self.final_layer_norm = final_layer_norm
        self.qkv_bias = qkv_bias
        self.out_bias = out_bias
        self.rel_pos_buckets = rel_pos_buckets
        self.max_rel_pos = max_rel_pos
        if binary_head_label not in ("original", "replaced"):
            raise ValueError(f"binary_head_label must be 'original' or 'replaced', got {binary_head_label!r}")
        self.binary_head_label = binary_head_label
        self.clm_head = clm_head
        self.scl_dim = scl_dim
        self.contrastive_theta = contrastive_theta
        if generator_head not in ("bert", "linear"):
            raise ValueError(f"generator_head must be 'bert' or 'linear', got {generator_head!r}")
        self.generator_head = generator_head
        self.classifier_dropout = classifier_dropout


__all__ = ["COCOLMConfig"]
