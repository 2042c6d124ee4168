// Sample quality against a reference set, in the feature space of a TorchScript
// classifier with features(x) (the penultimate layer) and forward(x) -> logits:
//   FD: the Frechet distance between Gaussians fitted to the two feature sets,
//       |mu1 - mu2|^2 + Tr(S1 + S2 - 2 (S1^1/2 S2 S1^1/2)^1/2) (Heusel et al. 2017);
//   label consistency: classifier accuracy on class-conditional samples;
//   precision / recall: k-NN manifold estimates (Kynkaenniemi et al. 2019): the share
//       of samples inside some reference point's k-NN ball, and vice versa.
#pragma once

#include <ATen/core/Tensor.h>

#include <memory>
#include <string>

#include "scorch/data_shards.h"

namespace scorch {

// The Frechet distance of N(mu1, cov1) and N(mu2, cov2), computed in float64.
double frechet_distance(const at::Tensor& mu1, const at::Tensor& cov1, const at::Tensor& mu2, const at::Tensor& cov2);
double frechet_distance(const at::Tensor& features1, const at::Tensor& features2);

struct PrecisionRecall {
  double precision = 0.0, recall = 0.0;
};
// real, fake: [N, d] features; k: the neighbour that sets each ball's radius.
PrecisionRecall knn_precision_recall(const at::Tensor& real, const at::Tensor& fake, int k = 3);

class FeatureClassifier {
 public:
  // Loads a TorchScript classifier with features(x) and forward(x) -> logits.
  explicit FeatureClassifier(const std::string& path);
  ~FeatureClassifier();
  at::Tensor features(const at::Tensor& images) const;  // [N, *shape] (images in [-1, 1]) -> [N, d]
  at::Tensor logits(const at::Tensor& images) const;
  // A dry run on samples of this shape: a bad-input Error unless features and forward take
  // them and return [B, d] and [B, classes].
  void check_accepts(at::IntArrayRef sample_shape) const;

 private:
  std::string path_;
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

struct EvalReport {
  int64_t samples = 0, reference = 0;
  double fd = 0.0;
  double accuracy = -1.0;  // -1 without labels
  PrecisionRecall pr;
};

// samples: [N, *shape], any shape the classifier accepts; labels: [N] int64 or undefined;
// reference: [M, *shape]. Under `shards`, samples, labels and reference are this process's
// rows of each: features are extracted here and gathered, counts summed, and every process
// gets the report of the whole sets.
EvalReport evaluate(const FeatureClassifier& classifier, const at::Tensor& samples, const at::Tensor& labels,
                    const at::Tensor& reference, int k = 3, const DataShards& shards = {});

// Rows per classifier call in features() and logits(): a distributed evaluation splits the
// sets at multiples of it, so that every row meets the network in the same batch as in one
// process.
constexpr int64_t kFeatureBlock = 500;

// A file of a data set the system provides (Debian's dataset-fashion-mnist):
// fashion_mnist_file("t10k-images-idx3-ubyte.gz"). The folder is SCORCH_FASHION_MNIST_DIR
// when set, else /usr/share/datasets/fashion-mnist.
std::string fashion_mnist_file(const std::string& name);

// IDX files (LeCun's format, optionally gzip-compressed): uint8 images [N, H, W] or labels [N].
at::Tensor read_idx(const std::string& path);
// Rows first .. first + count - 1 (along the first axis) alone, the rest streamed through
// and checked; and the header's shape alone (a share of a distributed fit or eval).
at::Tensor read_idx_rows(const std::string& path, int64_t first, int64_t count);
std::vector<int64_t> idx_shape(const std::string& path);

}  // namespace scorch
