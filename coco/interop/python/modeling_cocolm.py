# coding=utf-8
"""COCO-LM for Hugging Face `transformers` (PyTorch).

Written by `coco export` (the cocolm project); load the folder with
`AutoModel.from_pretrained(folder, trust_remote_code=True)` (or AutoModelForSequenceClassification,
AutoModelForTokenClassification, AutoModelForPreTraining, AutoModelForMaskedLM).

The encoder computes exactly what coco's encoder computes (model/encoder.h in the cocolm sources):

    x = tok[ids] + pos[0..T)                       (B, T, E)
    x = LN_emb(x) (embedding_layer_norm); dropout
    x = x W_proj^T + b_proj                         when E != hidden_size
    bias[h, i, j] = rel_pos_bias[bucket(j - i), h]  T5-style buckets (COCO-LM's variant), shared by all layers
    pre-norm:  x += Attn(LN1(x)); x += FF(LN2(x)); a final LayerNorm (final_layer_norm)
    post-norm: x = LN1(x + Attn(x)); x = LN2(x + FF(x))
    Attn(h) = softmax(q k^T / sqrt(head_size) + bias + padding mask) v, heads merged, output projection
    FF(h)   = act(h W1^T + b1) W2^T + b2, act = GELU (exact erf form)

Parameter names follow BERT / ELECTRA (embeddings.word_embeddings, encoder.layer.N.attention.self.query, ...);
COCO-LM's own tensors are encoder.rel_pos_bias (buckets, heads) and encoder.LayerNorm (the final norm).
COCO-LM has no token-type (segment) embedding: `token_type_ids` are accepted and ignored.
"""

import math
from dataclasses import dataclass
from typing import Optional, Tuple

import torch
from torch import nn
from torch.nn import BCEWithLogitsLoss, CrossEntropyLoss, MSELoss

from transformers import PreTrainedModel
from transformers.activations import ACT2FN
from transformers.modeling_outputs import (
    BaseModelOutput,
    MaskedLMOutput,
    SequenceClassifierOutput,
    TokenClassifierOutput,
)
from transformers.utils import ModelOutput

try:  # transformers >= 5: these skip tensors that from_pretrained has already loaded
    from transformers import initialization as _init
except ImportError:  # transformers 4.x initialises missing weights only
    _init = nn.init

from .configuration_cocolm import COCOLMConfig


def relative_position_bucket_signed(relative: int, num_buckets: int, max_distance: int) -> int:
    """COCO-LM's bucket of one relative position (key - query), before the offset: exact below
    num_buckets / 4, logarithmic up to max_distance, signed. Evaluated in Python floats (IEEE double),
    as coco evaluates it."""
    half = num_buckets // 2
    max_exact = half // 2
    max_bucket_val = half - 1 - max_exact
    n = -relative if relative < 0 else relative
    if n < max_exact:
        magnitude = n
    else:
        scaled = math.log(n / max_exact) / math.log((max_distance - 1) / max_exact) * max_bucket_val
        large = max_exact + math.ceil(scaled)
        magnitude = int(large) if large < half - 1 else half - 1
    return -magnitude if relative < 0 else magnitude


def relative_position_buckets(seq_len: int, num_buckets: int, max_distance: int, max_positions: int) -> torch.Tensor:
    """(T, T) long: bucket[i, j] of key j for query i, offset so that the smallest bucket over the
    max_positions x max_positions grid is 0."""
    offset = -relative_position_bucket_signed(-(max_positions - 1), num_buckets, max_distance)
    by_relative = torch.tensor(
        [
            relative_position_bucket_signed(r, num_buckets, max_distance) + offset
            for r in range(-(seq_len - 1), seq_len)
        ],
        dtype=torch.long,
    )
    positions = torch.arange(seq_len)
    return by_relative[positions[None, :] - positions[:, None] + (seq_len - 1)]


class COCOLMEmbeddings(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.embedding_size, padding_idx=config.pad_token_id)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.embedding_size)
        self.LayerNorm = (
            nn.LayerNorm(config.embedding_size, eps=config.layer_norm_eps) if config.embedding_layer_norm else None
        )
        self.dropout = nn.Dropout(config.embedding_dropout_prob)

    def forward(self, input_ids=None, position_ids=None, inputs_embeds=None):
        if inputs_embeds is None:
            inputs_embeds = self.word_embeddings(input_ids)
        seq_len = inputs_embeds.shape[1]
        if position_ids is None:
            position_ids = torch.arange(seq_len, device=inputs_embeds.device)[None, :]
        x = inputs_embeds + self.position_embeddings(position_ids)
        if self.LayerNorm is not None:
            x = self.LayerNorm(x)
        return self.dropout(x)


class COCOLMSelfAttention(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.num_attention_heads = config.num_attention_heads
        self.attention_head_size = config.attention_head_size
        inner = config.num_attention_heads * config.attention_head_size
        self.query = nn.Linear(config.hidden_size, inner, bias=config.qkv_bias)
        self.key = nn.Linear(config.hidden_size, inner, bias=config.qkv_bias)
        self.value = nn.Linear(config.hidden_size, inner, bias=config.qkv_bias)
        self.dropout = nn.Dropout(config.attention_probs_dropout_prob)

    def forward(self, hidden_states, attention_bias):
        batch, seq_len, _ = hidden_states.shape
        shape = (batch, seq_len, self.num_attention_heads, self.attention_head_size)
        q = self.query(hidden_states).view(shape).transpose(1, 2)  # (B, H, T, Dh)
        k = self.key(hidden_states).view(shape).transpose(1, 2)
        v = self.value(hidden_states).view(shape).transpose(1, 2)
        scores = torch.matmul(q, k.transpose(-1, -2)) * (self.attention_head_size**-0.5) + attention_bias
        probs = nn.functional.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype)
        context = torch.matmul(self.dropout(probs), v)  # (B, H, T, Dh)
        context = context.transpose(1, 2).reshape(batch, seq_len, -1)
        return context, probs


class COCOLMSelfOutput(nn.Module):
    def __init__(self, config):
        super().__init__()
        inner = config.num_attention_heads * config.attention_head_size
        self.dense = nn.Linear(inner, config.hidden_size, bias=config.out_bias)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)


class COCOLMAttention(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.self = COCOLMSelfAttention(config)
        self.output = COCOLMSelfOutput(config)


class COCOLMIntermediate(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.intermediate_size)
        self.intermediate_act_fn = ACT2FN[config.hidden_act]
        self.dropout = nn.Dropout(config.activation_dropout_prob)

    def forward(self, hidden_states):
        return self.dropout(self.intermediate_act_fn(self.dense(hidden_states)))


class COCOLMOutput(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.dense = nn.Linear(config.intermediate_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)


class COCOLMLayer(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.pre_norm = config.pre_norm
        self.attention = COCOLMAttention(config)
        self.intermediate = COCOLMIntermediate(config)
        self.output = COCOLMOutput(config)

    def forward(self, x, attention_bias):
        attn_out, ffn_out = self.attention.output, self.output
        if self.pre_norm:
            context, probs = self.attention.self(attn_out.LayerNorm(x), attention_bias)
            h = x + attn_out.dropout(attn_out.dense(context))
            f = ffn_out.dense(self.intermediate(ffn_out.LayerNorm(h)))
            return h + ffn_out.dropout(f), probs
        context, probs = self.attention.self(x, attention_bias)
        h = attn_out.LayerNorm(attn_out.dropout(attn_out.dense(context)) + x)
        f = ffn_out.dense(self.intermediate(h))
        return ffn_out.LayerNorm(ffn_out.dropout(f) + h), probs


class COCOLMEncoder(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.config = config
        self.layer = nn.ModuleList([COCOLMLayer(config) for _ in range(config.num_hidden_layers)])
        self.rel_pos_bias = (
            nn.Embedding(config.rel_pos_buckets, config.num_attention_heads) if config.rel_pos_buckets > 0 else None
        )
        self.LayerNorm = (
            nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps) if config.final_layer_norm else None
        )
        self._buckets = {}

    def relative_bias(self, seq_len, device):
        """(1, H, T, T) additive bias, or None."""
        if self.rel_pos_bias is None:
            return None
        if seq_len > self.config.max_position_embeddings:
            raise ValueError(
                f"sequence length {seq_len} exceeds max_position_embeddings ({self.config.max_position_embeddings})"
            )
        key = (seq_len, str(device))
        if key not in self._buckets:
            buckets = relative_position_buckets(
                seq_len, self.config.rel_pos_buckets, self.config.max_rel_pos, self.config.max_position_embeddings
            )
            self._buckets[key] = buckets.to(device)
        return self.rel_pos_bias(self._buckets[key]).permute(2, 0, 1).unsqueeze(0)

    def forward(self, x, padding_bias, output_attentions=False, output_hidden_states=False):
        bias = padding_bias
        relative = self.relative_bias(x.shape[1], x.device)
        if relative is not None:
            bias = bias + relative.to(x.dtype)
        all_hidden = (x,) if output_hidden_states else None
        all_attentions = () if output_attentions else None
        for layer in self.layer:
            x, probs = layer(x, bias)
            if output_hidden_states:
                all_hidden = all_hidden + (x,)
            if output_attentions:
                all_attentions = all_attentions + (probs,)
        if self.LayerNorm is not None:
            x = self.LayerNorm(x)
            if output_hidden_states:
                all_hidden = all_hidden[:-1] + (x,)
        return BaseModelOutput(last_hidden_state=x, hidden_states=all_hidden, attentions=all_attentions)


class COCOLMBias(nn.Module):
    """A bias over the vocabulary, for an output layer tied to the token embedding."""

    def __init__(self, size):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(size))


class COCOLMPreTrainedModel(PreTrainedModel):
    config_class = COCOLMConfig
    base_model_prefix = "cocolm"
    _no_split_modules = ["COCOLMLayer"]

    def _init_weights(self, module):
        """BERT's initialisation (coco's "bert" scheme): N(0, initializer_range), zero biases, LayerNorm 1 / 0."""
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            _init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                _init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            _init.normal_(module.weight, mean=0.0, std=std)
            if module.padding_idx is not None and not getattr(module.weight, "_is_hf_initialized", False):
                with torch.no_grad():
                    module.weight[module.padding_idx].zero_()
        elif isinstance(module, nn.LayerNorm):
            _init.ones_(module.weight)
            _init.zeros_(module.bias)
        elif isinstance(module, COCOLMBias):
            _init.zeros_(module.bias)
        elif isinstance(module, COCOLMForPreTraining) and module.cl_theta is not None:
            _init.constant_(module.cl_theta, 1.0)


def _return_dict(config, return_dict):
    return return_dict if return_dict is not None else getattr(config, "return_dict", True)


class COCOLMHeadModel(COCOLMPreTrainedModel):
    """A COCOLMModel (`self.cocolm`) with a head: the shared plumbing of the head classes. Their forward()
    signatures stay explicit, since transformers' Trainer reads them to pick the input columns."""

    def _encode(self, input_ids, attention_mask, position_ids, inputs_embeds, output_attentions, output_hidden_states):
        return self.cocolm(
            input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            return_dict=True,
        )

    def _result(self, result, return_dict):
        return result if _return_dict(self.config, return_dict) else result.to_tuple()


class COCOLMModel(COCOLMPreTrainedModel):
    """The bare COCO-LM encoder: last_hidden_state (B, T, hidden_size)."""

    def __init__(self, config):
        super().__init__(config)
        self.embeddings = COCOLMEmbeddings(config)
        if config.embedding_size != config.hidden_size:
            self.embeddings_project = nn.Linear(config.embedding_size, config.hidden_size)
        self.encoder = COCOLMEncoder(config)
        self.post_init()

    def get_input_embeddings(self):
        return self.embeddings.word_embeddings

    def set_input_embeddings(self, value):
        self.embeddings.word_embeddings = value

    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        token_type_ids=None,
        position_ids=None,
        inputs_embeds=None,
        output_attentions=None,
        output_hidden_states=None,
        return_dict=None,
        **kwargs,
    ):
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("specify exactly one of input_ids or inputs_embeds")
        output_attentions = output_attentions if output_attentions is not None else self.config.output_attentions
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        x = self.embeddings(input_ids=input_ids, position_ids=position_ids, inputs_embeds=inputs_embeds)
        if hasattr(self, "embeddings_project"):
            x = self.embeddings_project(x)
        batch, seq_len = x.shape[:2]
        if attention_mask is None:
            attention_mask = torch.ones(batch, seq_len, device=x.device)
        # Keys outside the mask get the dtype's most negative value (coco: -inf; identical after softmax
        # for any row with a key to attend to).
        padding_bias = (1.0 - attention_mask[:, None, None, :].to(x.dtype)) * torch.finfo(x.dtype).min
        out = self.encoder(
            x, padding_bias, output_attentions=output_attentions, output_hidden_states=output_hidden_states
        )
        if not _return_dict(self.config, return_dict):
            return tuple(v for v in (out.last_hidden_state, out.hidden_states, out.attentions) if v is not None)
        return out


@dataclass
class COCOLMForPreTrainingOutput(ModelOutput):
    """logits (B, T): replaced-token logits (positive = the token was replaced), as ElectraForPreTraining's."""

    loss: Optional[torch.FloatTensor] = None
    logits: Optional[torch.FloatTensor] = None
    hidden_states: Optional[Tuple[torch.FloatTensor, ...]] = None
    attentions: Optional[Tuple[torch.FloatTensor, ...]] = None


class COCOLMSCLHead(nn.Module):
    """The sequence-contrastive projection of the pretraining objective: LayerNorm(GELU(dense(h_cls)))."""

    def __init__(self, config):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.scl_dim)
        self.LayerNorm = nn.LayerNorm(config.scl_dim, eps=config.layer_norm_eps)

    def forward(self, cls_hidden):
        return self.LayerNorm(nn.functional.gelu(self.dense(cls_hidden)))


class COCOLMForPreTraining(COCOLMHeadModel):
    """The main model with COCO-LM's pretraining heads: the binary (copy / replaced-token) head, and where the
    objective had them the corrective-LM bias (clm_head), the SCL projection (scl_head) and the contrastive
    log-scale (cl_theta). `logits` are replaced-token logits; `labels` (B, T) are 1 for replaced tokens."""

    def __init__(self, config):
        super().__init__(config)
        self.cocolm = COCOLMModel(config)
        self.binary_head = nn.Linear(config.hidden_size, 1)
        self.clm_head = COCOLMBias(config.vocab_size) if config.clm_head else None
        self.scl_head = COCOLMSCLHead(config) if config.scl_dim > 0 else None
        self.cl_theta = nn.Parameter(torch.ones(1)) if config.contrastive_theta else None
        self.post_init()

    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        token_type_ids=None,
        position_ids=None,
        inputs_embeds=None,
        labels=None,
        output_attentions=None,
        output_hidden_states=None,
        return_dict=None,
        **kwargs,
    ):
        out = self._encode(
            input_ids, attention_mask, position_ids, inputs_embeds, output_attentions, output_hidden_states
        )
        binary = self.binary_head(out.last_hidden_state).squeeze(-1)
        logits = -binary if self.config.binary_head_label == "original" else binary
        loss = None
        if labels is not None:
            active = attention_mask == 1 if attention_mask is not None else torch.ones_like(labels, dtype=torch.bool)
            loss = BCEWithLogitsLoss()(logits[active], labels[active].float())
        result = COCOLMForPreTrainingOutput(
            loss=loss, logits=logits, hidden_states=out.hidden_states, attentions=out.attentions
        )
        return self._result(result, return_dict)


class COCOLMGeneratorPredictions(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.embedding_size)
        self.LayerNorm = nn.LayerNorm(config.embedding_size, eps=config.layer_norm_eps)

    def forward(self, hidden_states):
        return self.LayerNorm(nn.functional.gelu(self.dense(hidden_states)))


class COCOLMForMaskedLM(COCOLMHeadModel):
    """The auxiliary generator with its masked-LM head: "bert" (dense, GELU, LayerNorm, then the token
    embedding as output layer plus generator_lm_head.bias) or "linear" (generator_lm_head, (V, hidden))."""

    def __init__(self, config):
        super().__init__(config)
        self.cocolm = COCOLMModel(config)
        if config.generator_head == "bert":
            self.generator_predictions = COCOLMGeneratorPredictions(config)
            self.generator_lm_head = COCOLMBias(config.vocab_size)
        else:
            self.generator_predictions = None
            self.generator_lm_head = nn.Linear(config.hidden_size, config.vocab_size)
        self.post_init()

    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        token_type_ids=None,
        position_ids=None,
        inputs_embeds=None,
        labels=None,
        output_attentions=None,
        output_hidden_states=None,
        return_dict=None,
        **kwargs,
    ):
        out = self._encode(
            input_ids, attention_mask, position_ids, inputs_embeds, output_attentions, output_hidden_states
        )
        h = out.last_hidden_state
        if self.generator_predictions is not None:
            weight = self.cocolm.embeddings.word_embeddings.weight
            logits = nn.functional.linear(self.generator_predictions(h), weight, self.generator_lm_head.bias)
        else:
            logits = self.generator_lm_head(h)
        loss = None
        if labels is not None:
            loss = CrossEntropyLoss()(logits.view(-1, self.config.vocab_size), labels.view(-1))
        result = MaskedLMOutput(loss=loss, logits=logits, hidden_states=out.hidden_states, attentions=out.attentions)
        return self._result(result, return_dict)


def _classifier_dropout(config):
    return config.classifier_dropout if config.classifier_dropout is not None else config.hidden_dropout_prob


class COCOLMClassificationHead(nn.Module):
    """On the first token ([CLS]): dropout, dense, GELU, dropout, out_proj (ELECTRA's classification head)."""

    def __init__(self, config):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.dropout = nn.Dropout(_classifier_dropout(config))
        self.out_proj = nn.Linear(config.hidden_size, config.num_labels)

    def forward(self, hidden_states):
        x = self.dropout(hidden_states[:, 0])
        x = self.dropout(nn.functional.gelu(self.dense(x)))
        return self.out_proj(x)


def _classification_loss(config, logits, labels, num_labels):
    if config.problem_type is None:
        if num_labels == 1:
            config.problem_type = "regression"
        elif labels.dtype in (torch.long, torch.int):
            config.problem_type = "single_label_classification"
        else:
            config.problem_type = "multi_label_classification"
    if config.problem_type == "regression":
        return MSELoss()(logits.squeeze(-1), labels.squeeze(-1).to(logits.dtype))
    if config.problem_type == "single_label_classification":
        return CrossEntropyLoss()(logits.view(-1, num_labels), labels.view(-1))
    return BCEWithLogitsLoss()(logits, labels.to(logits.dtype))


class COCOLMForSequenceClassification(COCOLMHeadModel):
    def __init__(self, config):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.cocolm = COCOLMModel(config)
        self.classifier = COCOLMClassificationHead(config)
        self.post_init()

    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        token_type_ids=None,
        position_ids=None,
        inputs_embeds=None,
        labels=None,
        output_attentions=None,
        output_hidden_states=None,
        return_dict=None,
        **kwargs,
    ):
        out = self._encode(
            input_ids, attention_mask, position_ids, inputs_embeds, output_attentions, output_hidden_states
        )
        logits = self.classifier(out.last_hidden_state)
        loss = None if labels is None else _classification_loss(self.config, logits, labels, self.num_labels)
        result = SequenceClassifierOutput(
            loss=loss, logits=logits, hidden_states=out.hidden_states, attentions=out.attentions
        )
        return self._result(result, return_dict)


class COCOLMForTokenClassification(COCOLMHeadModel):
    def __init__(self, config):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.cocolm = COCOLMModel(config)
        self.dropout = nn.Dropout(_classifier_dropout(config))
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        token_type_ids=None,
        position_ids=None,
        inputs_embeds=None,
        labels=None,
        output_attentions=None,
        output_hidden_states=None,
        return_dict=None,
        **kwargs,
    ):
        out = self._encode(
            input_ids, attention_mask, position_ids, inputs_embeds, output_attentions, output_hidden_states
        )
        logits = self.classifier(self.dropout(out.last_hidden_state))
        loss = None
        if labels is not None:
            loss = CrossEntropyLoss()(logits.view(-1, self.num_labels), labels.view(-1))
        result = TokenClassifierOutput(
            loss=loss, logits=logits, hidden_states=out.hidden_states, attentions=out.attentions
        )
        return self._result(result, return_dict)


__all__ = [
    "COCOLMForMaskedLM",
    "COCOLMForPreTraining",
    "COCOLMForSequenceClassification",
    "COCOLMForTokenClassification",
    "COCOLMModel",
    "COCOLMPreTrainedModel",
]
