#include "model/config.h"

namespace coco::model {

namespace {

EncoderConfig parse_encoder(ConfigObject r) {
  EncoderConfig e;
  e.dim = r.get_int("dim", 0, 1, 1 << 16);
  if (!r.has("dim")) r.fail("dim", "a positive integer (the model width d)");
  e.embed_dim = r.get_int("embed_dim", e.dim, 1, 1 << 16);
  e.depth = r.get_int("depth", 0, 1, 512);
  if (!r.has("depth")) r.fail("depth", "a positive integer (number of layers)");
  e.heads = r.get_int("heads", 0, 1, 1024);
  if (!r.has("heads")) r.fail("heads", "a positive integer");
  if (e.dim % e.heads != 0) r.fail("heads", "a divisor of dim (" + std::to_string(e.dim) + ")");
  e.dim_head = r.get_int("dim_head", e.dim / e.heads, 1, 4096);
  e.ff_mult = r.get_int("ff_mult", 4, 1, 64);
  e.pre_norm = r.get_choice("norm", "pre", {"pre", "post"}) == "pre";
  e.embedding_norm = r.get_bool("embedding_norm", false);
  e.qkv_bias = r.get_bool("qkv_bias", false);
  e.out_bias = r.get_bool("out_bias", true);
  if (auto rel = r.get_optional_object("relative_position")) {
    e.relative_position = true;
    e.rel_buckets = rel->get_int("buckets", 32, 2, 4096);
    e.rel_max_distance = rel->get_int("max_distance", 128, 2, 1 << 20);
    if (e.rel_buckets % 4 != 0) rel->fail("buckets", "a multiple of 4 (half per direction, half exact)");
    rel->finish();
  }
  ConfigObject d = r.get_object("dropout");
  e.dropout.embedding = d.get_double("embedding", 0.0, 0.0, 0.99);
  e.dropout.attention = d.get_double("attention", 0.0, 0.0, 0.99);
  e.dropout.residual = d.get_double("residual", 0.0, 0.0, 0.99);
  e.dropout.activation = d.get_double("activation", 0.0, 0.0, 0.99);
  d.finish();
  e.layer_norm_eps = r.get_double("layer_norm_eps", 1e-5, 1e-12, 1.0);
  e.init = r.get_choice("init", "xtransformers", {"xtransformers", "bert"});
  e.final_norm = r.get_bool("final_norm", e.pre_norm);
  r.finish();
  return e;
}

nlohmann::json encoder_to_json(const EncoderConfig& e) {
  nlohmann::json j = {{"embed_dim", e.embed_dim},
                      {"dim", e.dim},
                      {"depth", e.depth},
                      {"heads", e.heads},
                      {"dim_head", e.dim_head},
                      {"ff_mult", e.ff_mult},
                      {"norm", e.pre_norm ? "pre" : "post"},
                      {"embedding_norm", e.embedding_norm},
                      {"qkv_bias", e.qkv_bias},
                      {"out_bias", e.out_bias},
                      {"dropout",
                       {{"embedding", e.dropout.embedding},
                        {"attention", e.dropout.attention},
                        {"residual", e.dropout.residual},
                        {"activation", e.dropout.activation}}},
                      {"layer_norm_eps", e.layer_norm_eps},
                      {"init", e.init},
                      {"final_norm", e.final_norm}};
  j["relative_position"] = e.relative_position
                               ? nlohmann::json{{"buckets", e.rel_buckets}, {"max_distance", e.rel_max_distance}}
                               : nlohmann::json(nullptr);
  return j;
}

}  // namespace

ModelConfig parse_model_config(ConfigObject r) {
  ModelConfig m;
  m.vocab_size = r.get_int("vocab_size", 0, 1, int64_t{1} << 31);
  if (!r.has("vocab_size")) r.fail("vocab_size", "a positive integer");
  m.max_positions = r.get_int("max_positions", 0, 1, 1 << 20);
  if (!r.has("max_positions")) r.fail("max_positions", "a positive integer");
  ConfigObject tie = r.get_object("tie");
  m.tie_token_embedding = tie.get_bool("token_embedding", true);
  m.tie_position_embedding = tie.get_bool("position_embedding", true);
  m.tie_embedding_norm = tie.get_bool("embedding_norm", true);
  tie.finish();
  m.generator_head = r.get_choice("generator_head", "linear", {"linear", "bert"});
  if (!r.has("generator")) r.fail("generator", "an object describing the generator encoder");
  if (!r.has("discriminator")) r.fail("discriminator", "an object describing the discriminator encoder");
  m.generator = parse_encoder(r.get_object("generator"));
  m.discriminator = parse_encoder(r.get_object("discriminator"));
  r.finish();
  return m;
}

void validate_model_config(const ModelConfig& m, const std::string& source) {
  auto fail = [&](const std::string& message) { throw ConfigError(source + ": " + message); };
  for (const auto* e : {&m.generator, &m.discriminator}) {
    const char* which = e == &m.generator ? "model.generator" : "model.discriminator";
    if (e->relative_position && e->rel_max_distance < e->rel_buckets / 4)
      fail(std::string(which) + ".relative_position.max_distance must be at least buckets/4");
  }
  if (m.tie_token_embedding && m.generator.embed_dim != m.discriminator.embed_dim)
    fail("model.tie.token_embedding is true but the embedding widths differ (generator embed_dim " +
         std::to_string(m.generator.embed_dim) + ", discriminator " + std::to_string(m.discriminator.embed_dim) + ")");
  if (m.tie_position_embedding && m.generator.embed_dim != m.discriminator.embed_dim)
    fail("model.tie.position_embedding is true but the embedding widths differ");
  if (m.tie_embedding_norm && m.generator.embedding_norm != m.discriminator.embedding_norm)
    fail("model.tie.embedding_norm is true but only one encoder has an embedding LayerNorm");
  if (m.generator_head == "bert" && m.generator.dim != m.generator.embed_dim)
    fail("model.generator_head \"bert\" ties the output to the token embedding, so the generator's dim (" +
         std::to_string(m.generator.dim) + ") must equal its embed_dim (" + std::to_string(m.generator.embed_dim) +
         ")");
}

nlohmann::json model_config_to_json(const ModelConfig& m) {
  return {{"vocab_size", m.vocab_size},
          {"max_positions", m.max_positions},
          {"tie",
           {{"token_embedding", m.tie_token_embedding},
            {"position_embedding", m.tie_position_embedding},
            {"embedding_norm", m.tie_embedding_norm}}},
          {"generator_head", m.generator_head},
          {"generator", encoder_to_json(m.generator)},
          {"discriminator", encoder_to_json(m.discriminator)}};
}

}  // namespace coco::model
