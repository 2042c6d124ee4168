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
  for (int64_t i = 0; i < images.size(0); i += kFeatureBlock) {
    const at::Tensor batch = images.narrow(0, i, std::min(kFeatureBlock, images.size(0) - i)).to(at::kFloat);
    out.push_back(impl_->module.get_method("features")({batch}).toTensor());
  }
  return at::cat(out);
}

at::Tensor FeatureClassifier::logits(const at::Tensor& images) const {
  c10::InferenceMode guard;
  std::vector<at::Tensor> out;
  for (int64_t i = 0; i < images.size(0); i += kFeatureBlock) {
    const at::Tensor batch = images.narrow(0, i, std::min(kFeatureBlock, images.size(0) - i)).to(at::kFloat);
    out.push_back(impl_->module.forward({batch}).toTensor());
  }
  return at::cat(out);
}

EvalReport evaluate(const FeatureClassifier& classifier, const at::Tensor& samples, const at::Tensor& labels,
                    const at::Tensor& reference, int k, const DataShards& shards) {
  // Counts, extremes and correct labels are combined over the shards; features gathered.
  const auto total = [&](int64_t n) {
    at::Tensor t = at::full({1}, double(n), at::kDouble);
    shards.sum(t);
    return int64_t(t.item<double>());
  };
  const auto extreme = [&](const at::Tensor& x, bool lowest) {
    const double v = x.numel() ? (lowest ? x.min() : x.max()).item<double>() : (lowest ? 1e300 : -1e300);
    const at::Tensor all = shards.gather(at::full({1}, v, at::kDouble));
    return (lowest ? all.min() : all.max()).item<double>();
  };
  if (samples.dim() < 2) bad_input("eval: samples must have shape [N, *shape]");
  const int64_t n_samples = total(samples.size(0)), n_reference = total(reference.size(0));
  if (n_samples < 2) bad_input("eval: needs at least 2 samples (a covariance), got " + std::to_string(n_samples));
  if (n_reference < 2) bad_input("eval: the reference needs at least 2 samples, got " + std::to_string(n_reference));
  if (reference.sizes().slice(1) != samples.sizes().slice(1))
    bad_input("eval: samples of shape " + shape_string(samples.sizes().slice(1)) + ", the reference's are " +
              shape_string(reference.sizes().slice(1)));
  classifier.check_accepts(samples.sizes().slice(1));
  if (!at::isfinite(samples).all().item<bool>()) bad_input("eval: samples have non-finite values");
  if (labels.defined() && (labels.dim() != 1 || labels.size(0) != samples.size(0)))
    bad_input("eval: labels must have shape [N] matching the samples");
  EvalReport r;
  if (labels.defined()) {
    const int64_t classes = classifier.logits(at::zeros(samples.sizes().slice(1).vec(), samples.options()).unsqueeze(0)).size(1);
    const int64_t lo = int64_t(extreme(labels.to(at::kDouble), true)), hi = int64_t(extreme(labels.to(at::kDouble), false));
    if (lo < 0 || hi >= classes)
      bad_input("eval: labels must lie in 0.." + std::to_string(classes - 1) + " (the classifier's classes), got " +
                std::to_string(lo < 0 ? lo : hi));
  }
  r.samples = n_samples;
  r.reference = n_reference;
  // Samples are clipped to the reference's range ([-1, 1] for images, whose reference
  // spans it): a generator's overshoot is not a feature of the data.
  const double lo = extreme(reference, true), hi = extreme(reference, false);
  const at::Tensor clipped = samples.clamp(lo, hi);
  // A process may hold no rows of a set (fewer blocks than processes): [0, d] features.
  const auto features = [&](const at::Tensor& x) {
    if (x.size(0) > 0) return classifier.features(x).to(at::kDouble);
    std::vector<int64_t> one = samples.sizes().vec();
    one[0] = 1;
    return classifier.features(at::zeros(one, samples.options())).to(at::kDouble).narrow(0, 0, 0);
  };
  const at::Tensor fs = shards.gather(features(clipped));
  const at::Tensor fr = shards.gather(features(reference));
  r.fd = frechet_distance(fs, fr);
  r.pr = knn_precision_recall(fr, fs, k);
  if (labels.defined()) {
    at::Tensor correct = at::zeros({1}, at::kDouble);
    if (clipped.size(0) > 0)
      correct = (classifier.logits(clipped).argmax(1) == labels.to(at::kLong)).to(at::kDouble).sum(0, true);
    shards.sum(correct);
    r.accuracy = correct.item<double>() / double(n_samples);
  }
  return r;
}

namespace {

// An IDX file's rows first .. first + count - 1 (count < 0: all), or only its shape when
// `shape_only`. The header's declared size bounds what is decompressed (no gzip bomb runs
// on); the rows kept are bounded by the input limit; rows outside the range are streamed
// through, so that the file is still checked against its header.
at::Tensor idx_range(const std::string& path, int64_t first, int64_t count, std::vector<int64_t>* shape_only) {
  const std::string what = "IDX file '" + path + "'";
  check_input_file(path, what);
  gzFile f = gzopen(path.c_str(), "rb");
  if (!f) bad_input(what + ": cannot open");
  const auto fail = [&](const std::string& why) {
    gzclose(f);
    bad_input(what + ": " + why);
  };
  // Reads exactly `want` more bytes (fewer at the end of the data), appended to `keep` or
  // dropped; returns the bytes read, -1 on a read error.
  std::string buf;
  const auto read_more = [&](uint64_t want, bool keep) -> int64_t {
    char chunk[1 << 16];
    int64_t got = 0;
    while (want > 0) {
      const int n = gzread(f, chunk, unsigned(std::min<uint64_t>(want, sizeof chunk)));
      if (n < 0) return -1;
      if (n == 0) break;
      if (keep) buf.append(chunk, size_t(n));
      want -= uint64_t(n);
      got += n;
    }
    return got;
  };
  if (read_more(4, true) < 0 || buf.size() < 4) fail("unreadable or truncated");
  const auto u8 = [&](size_t i) { return static_cast<unsigned char>(buf[i]); };
  if (u8(0) != 0 || u8(1) != 0 || u8(2) != 0x08) fail("not an unsigned-byte IDX file");
  const int dims = u8(3);
  if (dims < 1 || dims > 4 || read_more(4 * uint64_t(dims), true) < 0 || buf.size() < 4 + 4 * size_t(dims))
    fail("malformed header");
  std::vector<int64_t> shape;
  uint64_t row = 1;  // bytes per row (the first axis indexes rows)
  for (int d = 0; d < dims; ++d) {
    const size_t o = 4 + 4 * size_t(d);
    const uint64_t s = (uint64_t(u8(o)) << 24) | (uint64_t(u8(o + 1)) << 16) | (uint64_t(u8(o + 2)) << 8) | u8(o + 3);
    if (s == 0) fail("a dimension of size 0");
    shape.push_back(int64_t(s));
    // saturating: three sizes of up to 2^32 would overflow 64 bits (found by fuzz/fuzz_idx)
    if (d > 0) row = row > (uint64_t(1) << 62) / s ? (uint64_t(1) << 62) : row * s;
  }
  if (shape_only) {
    gzclose(f);
    *shape_only = shape;
    return {};
  }
  if (count < 0) first = 0, count = shape[0];
  if (first < 0 || first + count > shape[0])
    fail("rows " + std::to_string(first) + " to " + std::to_string(first + count - 1) + " are not in " + shape_string(shape));
  const uint64_t kept = row * uint64_t(count);
  if (row > input_byte_limit() || uint64_t(count) > input_byte_limit() / row)
    fail("the header declares " + shape_string(shape) + (count < shape[0] ? " (this share: " + std::to_string(count) + " rows)" : "") +
         ", above the input limit of " + std::to_string(input_byte_limit()) + " bytes (SCORCH_MAX_INPUT_BYTES)");
  const size_t offset = buf.size();
  const uint64_t before = row * uint64_t(first), after = row * uint64_t(shape[0] - first - count);
  if (read_more(before, false) != int64_t(before) || read_more(kept, true) != int64_t(kept))
    fail("data size does not match the header");
  // the rest is streamed through: the file must end where the header says, no later
  const int64_t rest = read_more(after + 1, false);
  gzclose(f);
  if (rest != int64_t(after)) bad_input(what + ": data size does not match the header");
  std::vector<int64_t> part = shape;
  part[0] = count;
  at::Tensor t = at::empty(part, at::kByte);
  std::memcpy(t.data_ptr(), buf.data() + offset, size_t(kept));
  return t;
}

}  // namespace

at::Tensor read_idx(const std::string& path) { return idx_range(path, 0, -1, nullptr); }

at::Tensor read_idx_rows(const std::string& path, int64_t first, int64_t count) {
  return idx_range(path, first, count, nullptr);
}

std::vector<int64_t> idx_shape(const std::string& path) {
  std::vector<int64_t> shape;
  idx_range(path, 0, 0, &shape);
  return shape;
}

std::string fashion_mnist_file(const std::string& name) {
  const char* dir = std::getenv("SCORCH_FASHION_MNIST_DIR");
  return std::string(dir && *dir ? dir : "/usr/share/datasets/fashion-mnist") + "/" + name;
}

}  // namespace scorch
