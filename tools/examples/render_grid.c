/* Example: embed scorch from C. Generates one Fashion-MNIST sample per class with the
 * default config and writes them side by side as a PGM image (no image library needed).
 * Usage: render_grid OUT.pgm [--set key=value]...   (build: tools/examples/CMakeLists.txt) */
#include <scorch/scorch.h>
#include <stdio.h>
#include <string.h>

static bool on_step(void* user, int step, int total, int64_t nfe) {
  (void)user;
  fprintf(stderr, "step %d/%d, %lld model calls\n", step, total, (long long)nfe);
  return true;
}

int main(int argc, char** argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: %s OUT.pgm [key=value ...]\n", argv[0]);
    return 2;
  }
  const char* sets[64];
  int n = 0;
  sets[n++] = "batch=10";
  sets[n++] = "output.png=";
  for (int i = 2; i < argc && n < 64; ++i) sets[n++] = argv[i];
  scorch_pipeline_params params = scorch_pipeline_params_init();
  params.overrides = sets;
  params.n_overrides = n;
  params.progress = on_step;
  scorch_pipeline* p = NULL;
  if (scorch_pipeline_create(&params, &p) != SCORCH_OK) {
    fprintf(stderr, "scorch: %s\n", scorch_last_error(NULL));
    return 2;
  }
  scorch_result* r = NULL;
  const scorch_status s = scorch_generate(p, &r);
  if (s != SCORCH_OK) {
    fprintf(stderr, "scorch: %s\n", scorch_last_error(p));
    scorch_pipeline_free(p);
    return s == SCORCH_BAD_INPUT ? 2 : 1;
  }
  /* samples [B, 1, H, W] in [-1, 1] -> one row of B images, 8-bit grey */
  const int64_t b = scorch_result_dim(r, 0), h = scorch_result_dim(r, 2), w = scorch_result_dim(r, 3);
  const float* x = scorch_result_data(r);
  FILE* f = fopen(argv[1], "wb");
  if (!f) {
    fprintf(stderr, "cannot write %s\n", argv[1]);
    return 2;
  }
  fprintf(f, "P5\n%lld %lld\n255\n", (long long)(b * w), (long long)h);
  for (int64_t row = 0; row < h; ++row)
    for (int64_t i = 0; i < b; ++i)
      for (int64_t col = 0; col < w; ++col) {
        float v = (x[(i * h + row) * w + col] + 1.0f) * 127.5f;
        v = v < 0.f ? 0.f : v > 255.f ? 255.f : v;
        fputc((int)(v + 0.5f), f);
      }
  fclose(f);
  fprintf(stderr, "wrote %s: %lld samples, %lld model calls\n", argv[1], (long long)b, (long long)scorch_result_nfe(r));
  scorch_result_free(r);
  scorch_pipeline_free(p);
  return 0;
}
