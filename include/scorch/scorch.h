/* scorch C API: embed the sampling engine from C or any language with a C FFI.
 *
 * Conventions (as llama.cpp and ONNX Runtime): opaque handles with create/free pairs,
 * *_params_init() for defaults, a status code from every call and a per-handle
 * last-error message, result buffers owned by the library and freed by a library call.
 * No C++ exception crosses this ABI. Thread safety: different pipelines may be used from
 * different threads at once; one pipeline runs one generation at a time (a second
 * concurrent scorch_generate on it returns SCORCH_BUSY); scorch_cancel may be called
 * from any thread at any time. */
#ifndef SCORCH_H
#define SCORCH_H

#include <stdbool.h>
#include <stdint.h>

#if defined(_WIN32)
#define SCORCH_API __declspec(dllexport)
#else
#define SCORCH_API __attribute__((visibility("default")))
#endif

#ifdef __cplusplus
extern "C" {
#endif

#define SCORCH_ABI_VERSION 4

typedef enum {
  SCORCH_OK = 0,
  SCORCH_INTERNAL = 1,    /* a bug or an unexpected library failure */
  SCORCH_BAD_INPUT = 2,   /* config, model file, data or option (the CLI's exit status 2) */
  SCORCH_CANCELLED = 3,   /* scorch_cancel or a progress callback returning false */
  SCORCH_INVALID_ARGUMENT = 4, /* a NULL handle or pointer */
  SCORCH_BUSY = 5         /* the pipeline is already generating */
} scorch_status;

/* Element types of host data passed in (scorch_pipeline_set_input). */
typedef enum { SCORCH_FLOAT32 = 0, SCORCH_FLOAT64 = 1, SCORCH_INT64 = 2, SCORCH_INT32 = 3 } scorch_dtype;

typedef struct scorch_pipeline scorch_pipeline; /* a loaded config: model, schedule, sampler */
typedef struct scorch_result scorch_result;     /* samples of one generation */

/* Called after every sampler step; return false to cancel. */
typedef bool (*scorch_progress_fn)(void* user, int step, int total, int64_t nfe);
/* Optional preview after every step: the latest data prediction x0 (float32, C order,
 * `rank` dimensions in `shape`, [batch, *sample shape]), valid during the call only. */
typedef void (*scorch_preview_fn)(void* user, int step, const float* x0, int rank, const int64_t* shape);
/* Receives the library's notes (e.g. teleport's skip point), one line each. */
typedef void (*scorch_log_fn)(void* user, const char* line);

typedef struct {
  const char* config_path;        /* a YAML file, or NULL */
  const char* config_yaml;        /* YAML text (used when config_path is NULL; both NULL: the default config) */
  const char* const* overrides;   /* "dotted.key=value" strings, as `scorch generate --set` */
  int n_overrides;
  scorch_progress_fn progress;
  scorch_log_fn log;
  scorch_preview_fn preview;      /* NULL: no preview (it costs a copy of x0 per step) */
  void* user;                     /* passed to the callbacks */
} scorch_pipeline_params;

SCORCH_API int scorch_abi_version(void);
SCORCH_API scorch_pipeline_params scorch_pipeline_params_init(void);

/* Loads and validates the config and its model. On failure *out is NULL and the message
 * is scorch_last_error(NULL) (per calling thread). */
SCORCH_API scorch_status scorch_pipeline_create(const scorch_pipeline_params* params, scorch_pipeline** out);
SCORCH_API void scorch_pipeline_free(scorch_pipeline* pipeline);

/* Runs one generation. On success *out holds the samples (free with scorch_result_free). */
SCORCH_API scorch_status scorch_generate(scorch_pipeline* pipeline, scorch_result** out);
/* SDEdit (image to image) and inpainting from host memory, as the init_image / strength /
 * inpaint_mask config keys: data is float32, C order, of shape [batch, *shape] or one sample
 * ([*shape] or [1, *shape]) for the whole batch; mask is NULL (SDEdit) or float32 of one
 * sample's shape, values in [0, 1], 1 where new content is generated; strength in (0, 1].
 * Both are copied. data == NULL goes back to the configured start. Not while this pipeline
 * is generating (SCORCH_BUSY). */
SCORCH_API scorch_status scorch_pipeline_set_init_image(scorch_pipeline* pipeline, const float* data, int rank,
                                                        const int64_t* shape, const float* mask, double strength);
/* A declared network input (model.inputs[].name; docs/conditioning.md) from host memory, C
 * order: [*shape] for the whole batch or [batch, *shape] (rank 0: one number, for a scalar
 * input); converted to the input's declared dtype and copied. negative: the value of the
 * unconditional rows of classifier-free guidance. Overrides a configured file or value.
 * Not while this pipeline is generating (SCORCH_BUSY). */
SCORCH_API scorch_status scorch_pipeline_set_input(scorch_pipeline* pipeline, const char* name, const void* data,
                                                   scorch_dtype dtype, int rank, const int64_t* shape, bool negative);
/* Thread-safe: makes the running (or the next) generation of this pipeline stop with
 * SCORCH_CANCELLED after its current step. */
SCORCH_API void scorch_cancel(scorch_pipeline* pipeline);

/* The last error message of this pipeline ("" if none); NULL: the calling thread's last
 * scorch_pipeline_create error. Valid until the next call on the same handle / thread. */
SCORCH_API const char* scorch_last_error(const scorch_pipeline* pipeline);

/* Samples as float32, C order [batch, *shape]; rank <= 8. */
/* Token models (model.type: tokens, ABI 4): fixed positions for infill from host memory,
   tokens [shape[0] = batch, shape[1] = L] int64, -1 where free (NULL: none; replaces the
   config's template / fixed). Class labels and guidance come from the config (cond,
   guidance.scale). A continuous pipeline refuses it with SCORCH_BAD_INPUT. */
SCORCH_API scorch_status scorch_pipeline_set_fixed_tokens(scorch_pipeline* pipeline, const int64_t* tokens,
                                                          const int64_t* shape);

/* A continuous model's samples: float32 [batch, *shape]; NULL for a token model. */
SCORCH_API const float* scorch_result_data(const scorch_result* result);
/* A token model's samples: int64 [batch, L]; NULL for a continuous model. */
SCORCH_API const int64_t* scorch_result_tokens(const scorch_result* result);
SCORCH_API int scorch_result_rank(const scorch_result* result);
SCORCH_API int64_t scorch_result_dim(const scorch_result* result, int axis);
SCORCH_API int64_t scorch_result_nfe(const scorch_result* result);
SCORCH_API void scorch_result_free(scorch_result* result);

#ifdef __cplusplus
}
#endif

#endif /* SCORCH_H */
