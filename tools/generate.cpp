#include "generate.h"

#include "core/error.h"
#include "data/tokenizer.h"
#include "train/loaded_model.h"

namespace tfm::train {

void run_sample(const SampleArgs& args, std::ostream& out) {
  TFM_CHECK(args.tokens >= 0, "--tokens must be >= 0, got ", args.tokens);
  layers::validate(args.sampling);
  const LoadedModel m = load_model(args.checkpoint, "gpt", "sample");
  layers::GPT& model = *m.model.gpt;
  const data::Tokenizer* tokenizer = m.tok.src.get();
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
