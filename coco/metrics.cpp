#include "coco/metrics.h"

#include <cstdio>

namespace coco::objective {

namespace {

std::string weight(double w) {
  char text[32];
  std::snprintf(text, sizeof text, "%g", w);
  return text;
}

}  // namespace

std::vector<std::string> metric_keys(const ObjectiveConfig& config) {
  std::vector<std::string> keys = {"loss", "mlm_loss", "mlm_acc", "rtd_loss", "rtd_acc"};
  if (config.preset == Preset::paper) keys.insert(keys.end(), {"clm_loss", "clm_acc"});
  keys.insert(keys.end(), {"cl_loss", "cl_acc"});
  return keys;
}

std::string describe_metric(std::string_view key, const ObjectiveConfig& c) {
  const bool paper = c.preset == Preset::paper;
  if (key == "loss") {
    std::string total = weight(c.gen_weight) + " * mlm_loss + " + weight(c.disc_weight) + " * rtd_loss";
    if (paper) total += " + " + weight(c.clm_weight) + " * clm_loss";
    return "weighted total: " + total + " + " + weight(c.cl_weight) + " * cl_loss";
  }
  if (key == "mlm_loss") return "generator: masked-LM cross-entropy at the masked positions";
  if (key == "mlm_acc") return "generator: masked positions whose top prediction is the original token";
  if (key == "rtd_loss")
    return paper ? "copy loss: binary cross-entropy over non-pad tokens, label 1 = original token kept "
                   "(replaced-token detection with the label flipped)"
                 : "replaced-token detection: binary cross-entropy over non-pad tokens, label 1 = replaced";
  if (key == "rtd_acc") return "binary head: non-pad tokens whose prediction (logit > 0) matches the label";
  if (key == "clm_loss")
    return c.clm_form == "paper" ? "corrective LM: -log(p_copy(1) [sample = original] + p_copy(0) p_LM(original)) "
                                   "at the masked positions"
                                 : "corrective LM: cross-entropy at the masked positions weighted by the "
                                   "stop-gradient P(replaced)";
  if (key == "clm_acc") return "corrective LM: masked positions whose top prediction is the original token";
  if (key == "cl_loss")
    return paper ? "sequence contrastive: NT-Xent over the 2B views (corrupted and cropped), fixed temperature"
                 : "sequence contrastive: symmetric InfoNCE between corrupted and cropped views, learned scale";
  if (key == "cl_acc") return "sequence contrastive: views whose most similar candidate is their own other view";
  return "";
}

}  // namespace coco::objective
