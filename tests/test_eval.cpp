#include "scorch/eval.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <zlib.h>

#include <algorithm>
#include <vector>

#include <filesystem>

#include "scorch/error.h"

namespace scorch {
namespace {

const auto f64 = at::TensorOptions().dtype(at::kDouble);
const std::string kFmnist = "/usr/share/datasets/fashion-mnist";
const std::string kClassifier = std::string(SCORCH_SOURCE_DIR) + "/models/fmnist_classifier.pt";

// For diagonal covariances FD = |m1 - m2|^2 + sum (sqrt a - sqrt b)^2.
TEST(Eval, FrechetDistanceClosedForm) {
  const at::Tensor m1 = at::tensor({0.0, 1.0, 2.0}, f64), m2 = at::tensor({1.0, 1.0, 0.0}, f64);
  const at::Tensor a = at::tensor({1.0, 4.0, 0.25}, f64), b = at::tensor({9.0, 1.0, 0.25}, f64);
  const double ref = 1.0 + 4.0 + (1 - 3) * (1 - 3) + (2 - 1) * (2 - 1) + 0.0;
  EXPECT_NEAR(frechet_distance(m1, at::diag(a), m2, at::diag(b)), ref, 1e-10);
  // A joint rotation leaves it unchanged (exercises the non-diagonal path).
  const at::Tensor q = std::get<0>(at::linalg_qr(at::randn({3, 3}, at::detail::createCPUGenerator(1), f64)));
  EXPECT_NEAR(frechet_distance(q.mv(m1), q.mm(at::diag(a)).mm(q.t()), q.mv(m2), q.mm(at::diag(b)).mm(q.t())), ref,
              1e-9);
}

TEST(Eval, FrechetDistanceOfASetWithItselfIsZero) {
  const at::Tensor f = at::randn({2000, 16}, at::detail::createCPUGenerator(2), f64);
  EXPECT_NEAR(frechet_distance(f, f), 0.0, 1e-8);
}

TEST(Eval, PrecisionRecall) {
  const at::Tensor a = at::randn({500, 8}, at::detail::createCPUGenerator(3));
  const PrecisionRecall same = knn_precision_recall(a, a, 3);
  EXPECT_DOUBLE_EQ(same.precision, 1.0);
  EXPECT_DOUBLE_EQ(same.recall, 1.0);
  const PrecisionRecall far = knn_precision_recall(a, a + 100.0, 3);
  EXPECT_DOUBLE_EQ(far.precision, 0.0);
  EXPECT_DOUBLE_EQ(far.recall, 0.0);
  // Samples from half of the support: precise but with low recall.
  const at::Tensor half = a.index({a.select(1, 0) > 0});
  const PrecisionRecall part = knn_precision_recall(a, half, 3);
  EXPECT_GT(part.precision, 0.9);
  EXPECT_LT(part.recall, 0.8);
  EXPECT_THROW(knn_precision_recall(a.narrow(0, 0, 3), a, 3), Error);
}

TEST(Eval, ReadIdx) {
  const at::Tensor labels = read_idx(kFmnist + "/t10k-labels-idx1-ubyte.gz");
  EXPECT_EQ(labels.sizes(), at::IntArrayRef({10000}));
  EXPECT_EQ(labels.max().item<int64_t>(), 9);
  const at::Tensor images = read_idx(kFmnist + "/t10k-images-idx3-ubyte.gz");
  EXPECT_EQ(images.sizes(), at::IntArrayRef({10000, 28, 28}));
  EXPECT_THROW(read_idx("/nonexistent.gz"), Error);
  EXPECT_THROW(read_idx(std::string(SCORCH_SOURCE_DIR) + "/README.md"), Error);
}

// A compressed IDX file is decompressed only up to its header's size: a header declaring
// more than the input limit is refused before the data is read (a gzip bomb's 64 MB of zeros
// behind it are never unpacked), and data beyond the declared size is an error.
TEST(Eval, ReadIdxBoundsDecompression) {
  const std::string p = (std::filesystem::temp_directory_path() / "scorch_idx_bomb.gz").string();
  const auto write = [&](const std::vector<unsigned char>& header, size_t zeros) {
    gzFile f = gzopen(p.c_str(), "wb9");
    gzwrite(f, header.data(), unsigned(header.size()));
    const std::vector<char> block(1 << 20, 0);
    for (size_t left = zeros; left > 0; left -= std::min(left, block.size()))
      gzwrite(f, block.data(), unsigned(std::min(left, block.size())));
    gzclose(f);
  };
  const auto message = [&] {
    try {
      read_idx(p);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  // [65535, 65535, 65535] bytes declared: far above any limit
  write({0, 0, 8, 3, 0, 0, 255, 255, 0, 0, 255, 255, 0, 0, 255, 255}, size_t(64) << 20);
  EXPECT_NE(message().find("above the input limit"), std::string::npos) << message();
  write({0, 0, 8, 1, 0, 0, 0, 4}, 5);  // 4 declared, 5 present
  EXPECT_NE(message().find("data size does not match the header"), std::string::npos) << message();
  write({0, 0, 8, 1, 0, 0, 0, 4}, 4);
  EXPECT_EQ(read_idx(p).numel(), 4);
  std::filesystem::remove(p);
}

// With the shipped classifier: FD of the test set against itself is 0 and grows
// monotonically as noise is added; the classifier labels real data correctly.
TEST(Eval, ShippedClassifierOnRealData) {
  const FeatureClassifier classifier(kClassifier);
  const at::Tensor images = read_idx(kFmnist + "/t10k-images-idx3-ubyte.gz").narrow(0, 0, 2000);
  const at::Tensor x = images.to(at::kFloat).div(127.5).sub(1.0).unsqueeze(1);
  const at::Tensor labels = read_idx(kFmnist + "/t10k-labels-idx1-ubyte.gz").narrow(0, 0, 2000).to(at::kLong);
  const EvalReport self = evaluate(classifier, x, labels, x);
  EXPECT_NEAR(self.fd, 0.0, 1e-6);
  EXPECT_GT(self.accuracy, 0.88);
  double last = self.fd;
  const at::Tensor z = at::randn(x.sizes(), at::detail::createCPUGenerator(4));
  for (double noise : {0.05, 0.1, 0.2, 0.4, 0.8}) {
    const double fd = evaluate(classifier, (x + noise * z).clamp(-1, 1), {}, x).fd;
    EXPECT_GT(fd, last) << "noise " << noise;
    last = fd;
  }
  EXPECT_THROW(evaluate(classifier, x.narrow(0, 0, 10).view({10, 784}), {}, x), Error);
  EXPECT_THROW(FeatureClassifier("/nonexistent.pt"), Error);
  EXPECT_THROW(FeatureClassifier(std::string(SCORCH_FIXTURES) + "/gaussian_eps.pt"), Error);  // no features()
}

// Any sample shape the classifier accepts: 4-d vectors with a classifier whose features are
// the vectors themselves. FD between N(0, I) and N(mu, I) is |mu|^2; the labels (x_0 < 0)
// are what its logits say; a shape it refuses is a clear error.
TEST(Eval, AnySampleShapeTheClassifierAccepts) {
  const FeatureClassifier classifier(std::string(SCORCH_FIXTURES) + "/vector_classifier.pt");
  const auto gen = at::detail::createCPUGenerator(7);
  const at::Tensor mu = at::tensor({1.0, -1.0, 1.0, 1.0});
  const at::Tensor samples = at::randn({20000, 4}, gen), reference = at::randn({20000, 4}, gen) + mu;
  const at::Tensor labels = (samples.select(1, 0) < 0).to(at::kLong);
  const EvalReport r = evaluate(classifier, samples, labels, reference);
  EXPECT_NEAR(r.fd, 4.0, 0.15);
  const at::Tensor clipped = samples.clamp(reference.min().item<double>(), reference.max().item<double>());
  EXPECT_NEAR(r.fd, frechet_distance(clipped, reference), 1e-9);
  EXPECT_DOUBLE_EQ(r.accuracy, 1.0);
  EXPECT_THROW(evaluate(classifier, samples.narrow(1, 0, 3), {}, reference.narrow(1, 0, 3)), Error);  // refused
  EXPECT_THROW(evaluate(classifier, samples, {}, reference.narrow(1, 0, 3)), Error);  // shapes differ
}

}  // namespace
}  // namespace scorch
