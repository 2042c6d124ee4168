#include "scorch/stages.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <map>
#include <sstream>

#include "scorch/error.h"
#include "scorch/io.h"

namespace scorch {

Tokens tokenize(const TokenizerSpec& spec, const std::string& text_in, const std::string& what) {
  std::string text = text_in;
  if (spec.lowercase) std::transform(text.begin(), text.end(), text.begin(), [](unsigned char c) { return std::tolower(c); });
  Tokens out;
  if (spec.kind == TokenizerSpec::Kind::Chars) {
    for (size_t i = 0; i < text.size(); ++i) {
      const unsigned char c = static_cast<unsigned char>(text[i]);
      const size_t pos = spec.chars.find(char(c));
      if (pos == std::string::npos) {
        const std::string shown = c < 0x80 && std::isprint(c) ? "'" + std::string(1, char(c)) + "'" : "a non-ASCII byte";
        bad_input(what + ": character " + shown + " at position " + std::to_string(i + 1) +
                  " is not in the tokenizer's table (\"" + spec.chars + "\")");
      }
      out.ids.push_back(int64_t(pos) + 1);
    }
  } else {
    std::istringstream words(text);
    std::string word;
    while (words >> word) {
      const auto it = std::find(spec.vocab.begin() + 1, spec.vocab.end(), word);
      if (it == spec.vocab.end()) bad_input(what + ": word '" + word + "' is not in the tokenizer's vocabulary");
      out.ids.push_back(int64_t(it - spec.vocab.begin()));
    }
  }
  if (int64_t(out.ids.size()) > spec.length) {
    out.ids.resize(size_t(spec.length));
    out.truncated = true;
  }
  out.ids.resize(size_t(spec.length), 0);
  return out;
}

TextEncoder::TextEncoder(std::unique_ptr<ScriptModule> module, TokenizerSpec tokenizer)
    : module_(std::move(module)), tokenizer_(std::move(tokenizer)) {
  if (module_->arity() != 1)
    bad_input(module_->what() + ": forward takes " + std::to_string(module_->arity()) +
              " arguments; a text encoder takes forward(tokens [B, length] int64)");
}

std::vector<at::Tensor> TextEncoder::encode(const std::vector<std::string>& prompts,
                                            std::vector<std::string>* notes) const {
  // Distinct prompts once each, in first-seen order; rows map back by index.
  std::map<std::string, int64_t> index;
  std::vector<int64_t> ids, rows;
  for (const auto& p : prompts) {
    auto it = index.find(p);
    if (it == index.end()) {
      const std::string what = "prompt \"" + p + "\"";
      const Tokens t = tokenize(tokenizer_, p, what);
      if (t.truncated && notes)
        notes->push_back("warning: " + what + " is longer than the text encoder's " + std::to_string(tokenizer_.length) +
                         " tokens; truncated");
      ids.insert(ids.end(), t.ids.begin(), t.ids.end());
      it = index.emplace(p, int64_t(index.size())).first;
    }
    rows.push_back(it->second);
  }
  const int64_t n = int64_t(index.size());
  const at::Tensor tokens = at::tensor(ids, at::TensorOptions().dtype(at::kLong)).view({n, tokenizer_.length});
  std::vector<at::Tensor> out = module_->forward({tokens});
  const at::Tensor pick = at::tensor(rows, at::TensorOptions().dtype(at::kLong));
  for (auto& t : out) {
    if (t.dim() == 0 || t.size(0) != n)
      bad_input(module_->what() + ": an output of shape " + shape_string(t.sizes()) + " for " + std::to_string(n) +
                " prompts; expected one row per prompt");
    if (at::isFloatingType(t.scalar_type()) && !at::isfinite(t).all().item<bool>())
      bad_input(module_->what() + ": non-finite output");
    t = t.index_select(0, pick.to(t.device()));
  }
  return out;
}

namespace {

// Tile starts along one axis of `size` cells: every `tile - overlap`, the last flush with the end.
std::vector<int64_t> tile_starts(int64_t size, int64_t tile, int64_t overlap) {
  if (size <= tile) return {0};
  std::vector<int64_t> starts;
  for (int64_t s = 0;; s += tile - overlap) {
    if (s + tile >= size) {
      starts.push_back(size - tile);
      break;
    }
    starts.push_back(s);
  }
  return starts;
}

// A tile's weight along one axis of n output pixels, at an edge it shares with a
// neighbour (not at the ends of the axis): 0 over the `margin` pixels next to the edge,
// where the tile's own zero padding is within the decoder's reach, then a linear ramp of
// `ramp` pixels up to 1. Two neighbours' ramps cover the same pixels and sum to 1.
at::Tensor ramp_weights(int64_t n, int64_t margin, int64_t ramp, bool first, bool last, const at::TensorOptions& o) {
  at::Tensor w = at::ones({n}, o);
  const at::Tensor up = (at::arange(ramp, o) + 0.5) / double(std::max<int64_t>(ramp, 1));
  if (!first) {
    w.narrow(0, 0, margin).zero_();
    w.narrow(0, margin, ramp).copy_(up);
  }
  if (!last) {
    w.narrow(0, n - margin, margin).zero_();
    w.narrow(0, n - margin - ramp, ramp).mul_(up.flip(0));
  }
  return w;
}

}  // namespace

at::Tensor tiled_decode(const std::function<at::Tensor(const at::Tensor&)>& f, const at::Tensor& z, int64_t tile,
                        int64_t overlap, int64_t upscale) {
  const int64_t h = z.size(-2), w = z.size(-1);
  if (tile <= 0 || (h <= tile && w <= tile)) return f(z);
  const std::vector<int64_t> ys = tile_starts(h, tile, overlap), xs = tile_starts(w, tile, overlap);
  // A third of the overlap is dropped at each shared edge and the middle third blended, so
  // a decoder that sees no further than overlap / 3 cells gives the untiled result exactly.
  const int64_t margin = overlap / 3 * upscale, ramp = overlap * upscale - 2 * margin;
  at::Tensor acc, weight;
  for (size_t i = 0; i < ys.size(); ++i) {
    for (size_t j = 0; j < xs.size(); ++j) {
      const int64_t th = std::min(tile, h), tw = std::min(tile, w);
      const at::Tensor out = f(z.narrow(-2, ys[i], th).narrow(-1, xs[j], tw));
      if (!acc.defined()) {
        std::vector<int64_t> sizes = out.sizes().vec();
        sizes[sizes.size() - 2] = h * upscale;
        sizes.back() = w * upscale;
        acc = at::zeros(sizes, out.options());
        weight = at::zeros({h * upscale, w * upscale}, out.options());
      }
      const auto o = out.options();
      const at::Tensor wy = ramp_weights(th * upscale, margin, ramp, i == 0, i + 1 == ys.size(), o);
      const at::Tensor wx = ramp_weights(tw * upscale, margin, ramp, j == 0, j + 1 == xs.size(), o);
      const at::Tensor wt = wy.unsqueeze(1) * wx.unsqueeze(0);
      acc.narrow(-2, ys[i] * upscale, th * upscale).narrow(-1, xs[j] * upscale, tw * upscale).add_(out * wt);
      weight.narrow(0, ys[i] * upscale, th * upscale).narrow(1, xs[j] * upscale, tw * upscale).add_(wt);
    }
  }
  return acc / weight;
}

LatentCodec::LatentCodec(std::unique_ptr<ScriptModule> decoder, std::unique_ptr<ScriptModule> encoder, LatentSpec spec,
                         std::vector<int64_t> latent_shape, at::TensorOptions options)
    : decoder_(std::move(decoder)),
      encoder_(std::move(encoder)),
      spec_(spec),
      latent_shape_(std::move(latent_shape)),
      options_(options) {
  if (!(spec_.scale_factor > 0.0)) bad_input("decoder.scale_factor: expected a positive number");
  if (spec_.tile < 0 || spec_.overlap < 0) bad_input("decoder.tile, decoder.overlap: expected non-negative integers");
  if (spec_.tile > 0 && spec_.overlap >= spec_.tile)
    bad_input("decoder.overlap: must be smaller than decoder.tile (" + std::to_string(spec_.tile) + ")");
  if (decoder_->arity() != 1) bad_input(decoder_->what() + ": a decoder takes forward(latents)");
  std::vector<int64_t> one = {1};
  one.insert(one.end(), latent_shape_.begin(), latent_shape_.end());
  // With tiling the dry run decodes one tile (its memory is what tiling bounds), and the
  // image shape follows from the upscaling; otherwise the whole latent.
  std::vector<int64_t> probe = one;
  const bool tiled = spec_.tile > 0 && latent_shape_.size() == 3 &&
                     (latent_shape_[1] > spec_.tile || latent_shape_[2] > spec_.tile);
  if (tiled) {
    probe[2] = std::min(spec_.tile, latent_shape_[1]);
    probe[3] = std::min(spec_.tile, latent_shape_[2]);
  }
  at::Tensor img = decoder_->forward({at::zeros(probe, options_)}).at(0);
  if (tiled && img.dim() == 4 && img.size(2) % probe[2] == 0) {
    const int64_t k = img.size(2) / probe[2];
    img = at::empty({1, img.size(1), latent_shape_[1] * k, latent_shape_[2] * k}, at::TensorOptions().device(at::kMeta));
  }
  if (img.dim() < 2 || img.size(0) != 1)
    bad_input(decoder_->what() + ": decoded a latent of shape " + shape_string(one) + " to " + shape_string(img.sizes()) +
              "; expected one image per latent");
  image_shape_ = img.sizes().slice(1).vec();
  // A decoder may change the rank (Flux's packed tokens [1024, 64] to [3, 512, 512]); tiling
  // needs latents and images on one grid.
  if (image_shape_.size() != latent_shape_.size()) {
    upscale_ = 0;
    if (spec_.tile > 0)
      bad_input("decoder.tile: needs a decoder from [C, H, W] latents to [C', kH, kW] images; this one decodes " +
                shape_string(latent_shape_) + " to " + shape_string(image_shape_));
  } else if (latent_shape_.size() >= 2) {
    const int64_t lh = latent_shape_[latent_shape_.size() - 2], lw = latent_shape_.back();
    const int64_t ih = image_shape_[image_shape_.size() - 2], iw = image_shape_.back();
    upscale_ = ih / lh;
    if (upscale_ < 1 || ih != upscale_ * lh || iw != upscale_ * lw)
      bad_input(decoder_->what() + ": decodes " + shape_string(latent_shape_) + " to " + shape_string(image_shape_) +
                ", not an integer upscaling of height and width");
  } else if (spec_.tile > 0) {
    bad_input("decoder.tile: needs [C, H, W] latents");
  }
  if (encoder_) {
    if (encoder_->arity() != 1) bad_input(encoder_->what() + ": an encoder takes forward(images)");
    std::vector<int64_t> im = {1};
    im.insert(im.end(), image_shape_.begin(), image_shape_.end());
    const at::Tensor lat = encoder_->forward({at::zeros(im, options_)}).at(0);
    if (lat.sizes() != at::IntArrayRef(one))
      bad_input(encoder_->what() + ": encoded an image of shape " + shape_string(im) + " to " +
                shape_string(lat.sizes()) + "; expected the model's latent shape " + shape_string(one));
  }
}

at::Tensor LatentCodec::decode(const at::Tensor& z) const {
  const auto f = [&](const at::Tensor& tile) { return decoder_->forward({tile}).at(0).to(options_.dtype()); };
  const at::Tensor x = tiled_decode(f, (z / spec_.scale_factor + spec_.shift_factor).to(options_), spec_.tile,
                                    spec_.overlap, upscale_);
  if (!at::isfinite(x).all().item<bool>()) bad_input(decoder_->what() + ": decoded non-finite values");
  return x;
}

at::Tensor LatentCodec::encode(const at::Tensor& x) const {
  if (!encoder_) bad_input("encoder.path: an image input (init_image, invert) of a latent model needs an encoder");
  const at::Tensor z = encoder_->forward({x.to(options_)}).at(0).to(options_.dtype());
  if (!at::isfinite(z).all().item<bool>()) bad_input(encoder_->what() + ": encoded non-finite values");
  return (z - spec_.shift_factor) * spec_.scale_factor;
}

}  // namespace scorch
