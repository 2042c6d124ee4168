// The stages around the denoiser in a latent text-to-image pipeline (SD, SDXL, SD3, Flux):
// a tokenizer and text encoder that turn prompts into the network's conditioning tensors,
// and the latent codec (a decoder from latents to images, with tiling for large outputs,
// and an encoder from images to latents for SDEdit, inpainting and inversion).
#pragma once

#include <ATen/core/Tensor.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "scorch/script_module.h"

namespace scorch {

// text_encoder.tokenizer: `chars` (token i + 1 is chars[i], 0 pads) or `vocab` (a file
// with one token per line, token id = line index, line 0 pads; prompts split on spaces).
struct TokenizerSpec {
  enum class Kind { Chars, Vocab } kind = Kind::Chars;
  std::string chars;
  std::vector<std::string> vocab;
  int64_t length = 0;      // the encoder's context: longer prompts are truncated
  bool lowercase = false;  // lowercase prompts first
};

struct Tokens {
  std::vector<int64_t> ids;  // `length` ids, padded with 0
  bool truncated = false;
};

// A character or word outside the table is a bad-input Error naming it and its position.
Tokens tokenize(const TokenizerSpec& spec, const std::string& text, const std::string& what);

class TextEncoder {
 public:
  TextEncoder(std::unique_ptr<ScriptModule> module, TokenizerSpec tokenizer);
  // The encoder's outputs for the prompts, each [prompts.size(), ...] in output order (a
  // tensor or a tuple: SD's hidden states, SDXL's pooled embedding); one call for all
  // distinct prompts. A truncated prompt adds a warning line to *notes.
  std::vector<at::Tensor> encode(const std::vector<std::string>& prompts, std::vector<std::string>* notes) const;
  const TokenizerSpec& tokenizer() const { return tokenizer_; }

 private:
  std::unique_ptr<ScriptModule> module_;
  TokenizerSpec tokenizer_;
};

// decoder.* and encoder.*: the network works on z = (encoder(x) - shift_factor) *
// scale_factor and the decoder gets z / scale_factor + shift_factor (Flux's convention; SD
// has shift 0, scale 0.18215).
struct LatentSpec {
  double scale_factor = 1.0;
  double shift_factor = 0.0;
  int64_t tile = 0;     // decode in tiles of tile x tile latent cells (0: whole)
  int64_t overlap = 0;  // latent cells two neighbouring tiles share, blended linearly
};

// Decodes z [B, C, H, W] in overlapping tiles: f(tile) -> [B, C', t k, t k] for a t x t
// tile (k: the decoder's upscaling). Across each shared overlap of o cells, the o/3 cells
// next to a tile's edge get weight 0 and the middle cells a linear blend of the two tiles,
// so a decoder that sees at most o/3 cells around a pixel gives the untiled result exactly;
// memory beyond the output is one tile's.
at::Tensor tiled_decode(const std::function<at::Tensor(const at::Tensor&)>& f, const at::Tensor& z, int64_t tile,
                        int64_t overlap, int64_t upscale);

class LatentCodec {
 public:
  // Validates the decoder (and encoder, may be null) with a one-sample dry run on the
  // latent shape (with tiling: on one tile, so that loading too stays within the tile's
  // memory): the image shape and the upscaling are read from it.
  LatentCodec(std::unique_ptr<ScriptModule> decoder, std::unique_ptr<ScriptModule> encoder, LatentSpec spec,
              std::vector<int64_t> latent_shape, at::TensorOptions options);
  // Network latents [B, *latent_shape] -> images [B, *image_shape].
  at::Tensor decode(const at::Tensor& z) const;
  // Images [B, *image_shape] -> network latents; needs an encoder.
  at::Tensor encode(const at::Tensor& x) const;
  bool has_encoder() const { return bool(encoder_); }
  const std::vector<int64_t>& image_shape() const { return image_shape_; }
  // Image pixels per latent cell along height and width; 0 when the decoder changes the rank.
  int64_t upscale() const { return upscale_; }

 private:
  std::unique_ptr<ScriptModule> decoder_, encoder_;
  LatentSpec spec_;
  std::vector<int64_t> latent_shape_, image_shape_;
  int64_t upscale_ = 1;
  at::TensorOptions options_;
};

}  // namespace scorch
