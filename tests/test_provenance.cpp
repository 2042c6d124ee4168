// Provenance: SHA-256 against the FIPS 180-4 examples, PNG text chunks (round trip, CRC and
// truncation checks), and the round trip of every shipped config: an output's recorded
// config runs again to bit-identical samples.
#include "scorch/provenance.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <yaml-cpp/yaml.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "scorch/config.h"
#include "scorch/error.h"
#include "scorch/image.h"
#include "scorch/io.h"
#include "scorch/pipeline.h"
#include "scorch/token_pipeline.h"

namespace fs = std::filesystem;

namespace scorch {
namespace {

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void spit(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(bytes.data(), std::streamsize(bytes.size()));
}

TEST(Provenance, Sha256KnownAnswers) {
  EXPECT_EQ(sha256_hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(sha256_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(sha256_hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  EXPECT_EQ(sha256_hex(std::string(1000000, 'a')), "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
  const std::string path = (fs::temp_directory_path() / "scorch_sha.bin").string();
  spit(path, std::string(100000, 'a'));
  EXPECT_EQ(sha256_file(path, "test"), sha256_hex(std::string(100000, 'a')));
  fs::remove(path);
  EXPECT_THROW(sha256_file("/nonexistent/model.pt", "model.path"), Error);
}

TEST(Provenance, PngTextChunksRoundTripAndChecks) {
  const std::string png = (fs::temp_directory_path() / "scorch_prov.png").string();
  const at::Tensor img = at::rand({2, 1, 8, 8}) * 2 - 1;
  write_png_grid(png, img, 0, "test", {{"scorch", "seed: [1, 2]\nbatch: 2\n"}, {"parameters", "ddim, 5 steps"}});
  ASSERT_TRUE(is_png_file(png));
  const auto chunks = png_text_chunks(png, "test");
  EXPECT_EQ(chunks.at("scorch"), "seed: [1, 2]\nbatch: 2\n");
  EXPECT_EQ(chunks.at("parameters"), "ddim, 5 steps");
  // the image itself is untouched: grey levels read back as written
  const at::Tensor back = read_grey_image(png, 20, 20, "test");
  EXPECT_EQ(back.size(0), 20);

  std::string bytes = slurp(png);
  const size_t at = bytes.find("seed: [1, 2]");
  ASSERT_NE(at, std::string::npos);
  std::string corrupt = bytes;
  corrupt[at] = 'S';
  spit(png, corrupt);
  EXPECT_THROW(png_text_chunks(png, "test"), Error);  // CRC mismatch
  spit(png, bytes.substr(0, bytes.size() - 20));
  EXPECT_THROW(png_text_chunks(png, "test"), Error);  // truncated
  spit(png, "not a png at all");
  EXPECT_FALSE(is_png_file(png));
  EXPECT_THROW(png_text_chunks(png, "test"), Error);
  fs::remove(png);
}

// Every shipped config (small batch and steps), and a float64 and a guidance case: the
// config recorded in the output runs again to a bit-identical .npy, from the PNG and from
// the .json. A recorded config whose model file changed is refused.
TEST(Provenance, EveryConfigRunsAgainFromItsOutput) {
  const fs::path dir = fs::temp_directory_path() / "scorch_prov_round_trip";
  fs::remove_all(dir);
  fs::create_directories(dir);
  const std::vector<std::pair<std::string, std::vector<std::string>>> cases = {
      {"configs/default.yaml", {"batch=10", "sampler.steps=3"}},
      {"configs/fmnist_gaussian.yaml", {"batch=4", "sampler.name=euler_ancestral"}},
      {"configs/fmnist_gaussian.yaml", {"batch=3", "dtype=float64", "sampler.name=dpmpp_2m_sde", "seed=[4, 9, 2]"}},
      {"configs/guidance_cfg.yaml", {"batch=10", "sampler.steps=3"}},
      {"configs/fmnist_flow.yaml", {"batch=10", "sampler.steps=3"}},
      {"configs/fmnist_prompt.yaml", {"batch=4", "sampler.steps=3", "prompt=[bag, a boot, sneaker, bag]"}},
      {"configs/default.yaml",
       {"batch=10", "sampler.steps=3", "guidance.terms=[{cond: 2, weight: 1.5, window: [0.5, 1]}]",
        "guidance.corrector.type=ula"}},
  };
  for (size_t k = 0; k < cases.size(); ++k) {
    const auto& [config, sets] = cases[k];
    const std::string png = (dir / ("a" + std::to_string(k) + ".png")).string();
    const std::string npy = (dir / ("a" + std::to_string(k) + ".npy")).string();
    std::vector<std::string> first = sets;
    first.insert(first.end(), {"output.png=" + png, "output.npy=" + npy});
    const auto p = Pipeline::from_config(load_config(config, first));
    p->write_outputs(p->generate());
    const at::Tensor original = read_npy(npy);
    for (const std::string& record : {png, provenance_json_path(npy)}) {
      const std::string again = (dir / "again.npy").string();
      const auto q = Pipeline::from_config(load_config(record, {"output.npy=" + again}));
      q->write_outputs(q->generate());
      EXPECT_TRUE(at::equal(read_npy(again), original)) << config << " from " << record;
      EXPECT_EQ(q->provenance_yaml(), p->provenance_yaml()) << record;
    }
  }
  // The shipped word model: tokens again from the .json.
  const std::string tok = (dir / "words.npy").string();
  const auto t = TokenPipeline::from_config(load_config("configs/words.yaml", {"batch=5", "output.npy=" + tok}));
  t->write_outputs(t->generate());
  const auto t2 = TokenPipeline::from_config(load_config(provenance_json_path(tok), {}));
  EXPECT_TRUE(at::equal(t2->generate().tokens, read_npy(tok)));
  // A recorded model hash that does not match the file is refused.
  YAML::Node changed = load_config((dir / "a1.png").string(), {});
  changed["provenance"]["model_sha256"] = std::string(64, '0');
  EXPECT_THROW(Pipeline::from_config(changed), Error);
  fs::remove_all(dir);
}

}  // namespace
}  // namespace scorch
