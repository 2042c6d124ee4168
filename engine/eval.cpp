#include "scorch/eval.h"

#include <ATen/ATen.h>
#include <torch/script.h>
#include <zlib.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>

#include "scorch/error.h"
#include "scorch/io.h"

namespace scorch {

double frechet_distance(const at::Tensor& mu1, const at::Tensor& cov1, const at::Tensor& mu2,
                        const at::Tensor& cov2) {
  const at::Tensor m1 = mu1.to(at::kDouble), m2 = mu2.to(at::kDouble);
  const at::Tensor c1 = cov1.to(at::kDouble), c2 = cov2.to(at::kDouble);
  // (S1^1/2 S2 S1^1/2) is symmetric positive semi-definite and has the same
  // eigenvalues as S1 S2, so Tr sqrt(S1 S2) is the sum of its eigenvalues' roots.
  const auto [ev1, u1] = at::linalg_eigh(c1);
  const at::Tensor s1h = u1.mm(at::diag(ev1.clamp_min(0).sqrt())).mm(u1.t());
  at::Tensor m = s1h.mm(c2).mm(s1h);
  m = 0.5 * (m + m.t());
  const double tr_sqrt = at::linalg_eigvalsh(m).clamp_min(0).sqrt().sum().item<double>();
  const double d2 = (m1 - m2).pow(2).sum().item<double>();
  return std::max(0.0, d2 + c1.trace().item<double>() + c2.trace().item<double>() - 2.0 * tr_sqrt);
}

namespace {
std::pair<at::Tensor, at::Tensor> moments(const at::Tensor& f) {
  const at::Tensor x = f.to(at::kDouble);
  const at::Tensor mu = x.mean(0);
  const at::Tensor c = x - mu;
  return {mu, c.t().mm(c) / double(std::max<int64_t>(1, x.size(0) - 1))};
}

// Distance of each row of a to its k-th nearest other row of a (the row itself excluded).
at::Tensor kth_neighbour_radius(const at::Tensor& a, int k) {
  std::vector<at::Tensor> out;
  for (int64_t i = 0; i < a.size(0); i += 1024) {
    const at::Tensor d = at::cdist(a.narrow(0, i, std::min<int64_t>(1024, a.size(0) - i)), a);
    // k + 1: the zero distance to itself comes first
    out.push_back(std::get<0>(d.topk(k + 1, 1, /*largest=*/false)).select(1, k));
  }
  return at::cat(out);
}

// Share of the rows of q that fall inside at least one ball (centre p_j, radius r_j).
double coverage(const at::Tensor& q, const at::Tensor& p, const at::Tensor& r) {
  int64_t inside = 0;
  for (int64_t i = 0; i < q.size(0); i += 1024) {
    const at::Tensor d = at::cdist(q.narrow(0, i, std::min<int64_t>(1024, q.size(0) - i)), p);
    inside += (d <= r.unsqueeze(0)).any(1).sum().item<int64_t>();
  }
  return double(inside) / double(q.size(0));
}
}  // namespace

double frechet_distance(const at::Tensor& features1, const at::Tensor& features2) {
  const auto [mu1, c1] = moments(features1);
  const auto [mu2, c2] = moments(features2);
  return frechet_distance(mu1, c1, mu2, c2);
}

PrecisionRecall knn_precision_recall(const at::Tensor& real, const at::Tensor& fake, int k) {
  if (k < 1 || real.size(0) <= k || fake.size(0) <= k)
    bad_input("precision/recall: need more than k = " + std::to_string(k) + " samples in each set");
  const at::Tensor r = real.to(at::kFloat), f = fake.to(at::kFloat);
  PrecisionRecall pr;
  pr.precision = coverage(f, r, kth_neighbour_radius(r, k));
  pr.recall = coverage(r, f, kth_neighbour_radius(f, k));
  return pr;
}

struct FeatureClassifier::Impl {
  torch::jit::Module module;
};

FeatureClassifier::FeatureClassifier(const std::string& path) : impl_(std::make_unique<Impl>()) {
  const std::string what = "classifier '" + path + "'";
  check_input_file(path, what);
  try {
    impl_->module = torch::jit::load(path, c10::kCPU);
  } catch (const std::exception& e) {
    bad_input(what + ": not a loadable TorchScript file");
  }
  impl_->module.eval();
  if (!impl_->module.find_method("features")) bad_input(what + ": has no features(x) method");
  path_ = path;
}

void FeatureClassifier::check_accepts(at::IntArrayRef sample_shape) const {
  // A dry run on two zero samples: the classifier, not scorch, decides which shapes it takes.
  std::vector<int64_t> shape = {2};
  shape.insert(shape.end(), sample_shape.begin(), sample_shape.end());
  const std::string what = "classifier '" + path_ + "'";
  at::Tensor f, l;
  try {
    const at::Tensor x = at::zeros(shape);
    f = features(x);
    l = logits(x);
  } catch (const std::exception&) {
    bad_input(what + ": does not accept samples of shape " + shape_string(sample_shape));
  }
  if (f.dim() != 2 || f.size(0) != 2) bad_input(what + ": features(x) must return [B, d]");
  if (l.dim() != 2 || l.size(0) != 2) bad_input(what + ": forward(x) must return logits [B, classes]");
}

FeatureClassifier::~FeatureClassifier() = default;

at::Tensor FeatureClassifier::features(const at::Tensor& images) const {
  c10::InferenceMode guard;
  std::vector<at::Tensor> out;
  for (int64_t i = 0; i < images.size(0); i += 500) {
    const at::Tensor batch = images.narrow(0, i, std::min<int64_t>(500, images.size(0) - i)).to(at::kFloat);
    out.push_back(impl_->module.get_method("features")({batch}).toTensor());
  }
  return at::cat(out);
}

at::Tensor FeatureClassifier::logits(const at::Tensor& images) const {
  c10::InferenceMode guard;
  std::vector<at::Tensor> out;
  for (int64_t i = 0; i < images.size(0); i += 500) {
    const at::Tensor batch = images.narrow(0, i, std::min<int64_t>(500, images.size(0) - i)).to(at::kFloat);
    out.push_back(impl_->module.forward({batch}).toTensor());
  }
  return at::cat(out);
}

EvalReport evaluate(const FeatureClassifier& classifier, const at::Tensor& samples, const at::Tensor& labels,
                    const at::Tensor& reference, int k) {
  if (samples.dim() < 2) bad_input("eval: samples must have shape [N, *shape]");
  if (samples.size(0) < 2) bad_input("eval: needs at least 2 samples (a covariance), got " + std::to_string(samples.size(0)));
  if (reference.size(0) < 2) bad_input("eval: the reference needs at least 2 samples, got " + std::to_string(reference.size(0)));
  if (reference.sizes().slice(1) != samples.sizes().slice(1))
    bad_input("eval: samples of shape " + shape_string(samples.sizes().slice(1)) + ", the reference's are " +
              shape_string(reference.sizes().slice(1)));
  classifier.check_accepts(samples.sizes().slice(1));
  if (!at::isfinite(samples).all().item<bool>()) bad_input("eval: samples have non-finite values");
  if (labels.defined() && (labels.dim() != 1 || labels.size(0) != samples.size(0)))
    bad_input("eval: labels must have shape [N] matching the samples");
  EvalReport r;
  if (labels.defined()) {
    const int64_t classes = classifier.logits(samples.narrow(0, 0, 1).clamp(-1.0, 1.0)).size(1);
    const int64_t lo = labels.min().item<int64_t>(), hi = labels.max().item<int64_t>();
    if (lo < 0 || hi >= classes)
      bad_input("eval: labels must lie in 0.." + std::to_string(classes - 1) + " (the classifier's classes), got " +
                std::to_string(lo < 0 ? lo : hi));
  }
  r.samples = samples.size(0);
  r.reference = reference.size(0);
  // Samples are clipped to the reference's range ([-1, 1] for images, whose reference
  // spans it): a generator's overshoot is not a feature of the data.
  const double lo = reference.min().item<double>(), hi = reference.max().item<double>();
  const at::Tensor clipped = samples.clamp(lo, hi);
  const at::Tensor fs = classifier.features(clipped);
  const at::Tensor fr = classifier.features(reference);
  r.fd = frechet_distance(fs, fr);
  r.pr = knn_precision_recall(fr, fs, k);
  if (labels.defined())
    r.accuracy = (classifier.logits(clipped).argmax(1) == labels.to(at::kLong)).to(at::kDouble)
                     .mean()
                     .item<double>();
  return r;
}

at::Tensor read_idx(const std::string& path) {
  const std::string what = "IDX file '" + path + "'";
  check_input_file(path, what);
  gzFile f = gzopen(path.c_str(), "rb");
  if (!f) bad_input(what + ": cannot open");
  // Reads exactly `want` more bytes (fewer at the end of the data); -1 on a read error.
  std::string buf;
  const auto read_more = [&](size_t want) {
    char chunk[1 << 16];
    while (want > 0) {
      const int n = gzread(f, chunk, unsigned(std::min(want, sizeof chunk)));
      if (n < 0) return -1;
      if (n == 0) break;
      buf.append(chunk, size_t(n));
      want -= size_t(n);
    }
    return 0;
  };
  // The header first: its declared size bounds what is decompressed (no gzip bomb runs on).
  const auto fail = [&](const std::string& why) {
    gzclose(f);
    bad_input(what + ": " + why);
  };
  if (read_more(4) < 0 || buf.size() < 4) fail("unreadable or truncated");
  const auto u8 = [&](size_t i) { return static_cast<unsigned char>(buf[i]); };
  if (u8(0) != 0 || u8(1) != 0 || u8(2) != 0x08) fail("not an unsigned-byte IDX file");
  const int dims = u8(3);
  if (dims < 1 || dims > 4 || read_more(4 * size_t(dims)) < 0 || buf.size() < 4 + 4 * size_t(dims))
    fail("malformed header");
  std::vector<int64_t> shape;
  uint64_t count = 1;
  for (int d = 0; d < dims; ++d) {
    const size_t o = 4 + 4 * size_t(d);
    const uint64_t s = (uint64_t(u8(o)) << 24) | (uint64_t(u8(o + 1)) << 16) | (uint64_t(u8(o + 2)) << 8) | u8(o + 3);
    if (s == 0) fail("a dimension of size 0");
    shape.push_back(int64_t(s));
    count = count > input_byte_limit() / s ? input_byte_limit() + 1 : count * s;
  }
  if (count > input_byte_limit())
    fail("the header declares " + shape_string(shape) + " bytes, above the input limit of " +
         std::to_string(input_byte_limit()) + " (SCORCH_MAX_INPUT_BYTES)");
  const size_t offset = 4 + 4 * size_t(dims);
  if (read_more(size_t(count) + 1) < 0) fail("unreadable or truncated");
  gzclose(f);
  if (buf.size() - offset != size_t(count)) bad_input(what + ": data size does not match the header");
  at::Tensor t = at::empty(shape, at::kByte);
  std::memcpy(t.data_ptr(), buf.data() + offset, size_t(count));
  return t;
}

std::string fashion_mnist_file(const std::string& name) {
  const char* dir = std::getenv("SCORCH_FASHION_MNIST_DIR");
  return std::string(dir && *dir ? dir : "/usr/share/datasets/fashion-mnist") + "/" + name;
}

}  // namespace scorch
