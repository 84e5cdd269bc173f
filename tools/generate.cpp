#include "generate.h"

#include "core/error.h"
#include "data/tokenizer.h"
#include "layers/gpt.h"
#include "train/checkpoint.h"
#include "train/config.h"
#include "train/model_io.h"
#include "train/trainer.h"

namespace tfm::train {

void run_sample(const SampleArgs& args, std::ostream& out) {
  TFM_CHECK(args.tokens >= 0, "--tokens must be >= 0, got ", args.tokens);
  layers::validate(args.sampling);
  const std::string path = resolve_checkpoint(args.checkpoint);
  const CheckpointData ck = load_checkpoint(path);
  const Config cfg = Config::parse(ck.config_yaml, path + " (config)");
  TFM_CHECK(cfg.get_string("model.family") == "gpt", path, ": tfm sample needs a gpt checkpoint, this one is ",
            cfg.get_string("model.family"), " (use tfm translate)");
  const auto tokenizer = data::load_tokenizer(ck.tokenizer_kind, ck.tokenizer_blob);
  layers::GPT model(gpt_config(cfg, tokenizer->vocab_size()), 0);
  load_parameters(model, ck.params, path);
  model.eval();
  TFM_CHECK(!args.prompt.empty(), "--prompt must not be empty");
  const std::vector<int32_t> prompt = tokenizer->encode(args.prompt);
  out << args.prompt << std::flush;
  // Decode the growing continuation and print what is new, so multi-token
  // characters and subword pieces come out whole.
  std::vector<int32_t> generated;
  std::string printed;
  core::Generator gen(args.seed);
  model.generate(prompt, args.tokens, args.sampling, gen, [&](int32_t id) {
    generated.push_back(id);
    const std::string text = tokenizer->decode(generated);
    if (text.size() > printed.size() && text.compare(0, printed.size(), printed) == 0) {
      out << text.substr(printed.size()) << std::flush;
      printed = text;
    }
  });
  out << "\n";
}

}  // namespace tfm::train
