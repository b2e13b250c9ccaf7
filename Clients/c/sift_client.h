/* Sift C client: blocking calls over one TCP connection (one call at a time).
 * Protocol: docs/PROTOCOL.md. Messages: Protos/sift.proto, via protobuf-c. */
#pragma once
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct sift_client sift_client;

/* gRPC status codes, as the server sends them (SIFT_OK = 0). */
enum {
    SIFT_OK = 0, SIFT_CANCELLED = 1, SIFT_UNKNOWN = 2, SIFT_INVALID_ARGUMENT = 3, SIFT_DEADLINE_EXCEEDED = 4,
    SIFT_NOT_FOUND = 5, SIFT_RESOURCE_EXHAUSTED = 8, SIFT_UNIMPLEMENTED = 12, SIFT_INTERNAL = 13,
    SIFT_UNAVAILABLE = 14, SIFT_UNAUTHENTICATED = 16
};

typedef struct {
    int code;           /* SIFT_OK or the failure's code */
    char message[512];  /* what went wrong and what to do */
} sift_status;

typedef struct {
    uint32_t index;         /* position in the documents passed */
    float relevance_score;  /* sigmoid(logit), 0..1 */
    float logit;            /* logit("yes") - logit("no") */
    uint32_t tokens;        /* document tokens after truncation */
    uint32_t input_tokens;  /* all tokens of the pair */
    int truncated;
    uint32_t window;        /* with chunk_long_documents: the window (0-based) that gave the score */
    uint32_t windows;       /* with chunk_long_documents: the document's windows (1: it fit whole) */
} sift_result;

typedef struct {
    const char *instruction;          /* NULL: the model card's default; "" or any text: used as given */
    uint32_t top_n;                   /* 0: all */
    int input_order;                  /* results in input order instead of best first */
    uint32_t max_tokens_per_document; /* 0: no cut */
    uint32_t max_length;              /* 0: the server's default */
    uint32_t timeout_ms;              /* 0: no deadline */
    int chunk_long_documents;         /* score a document longer than max_length by its best window */
    uint32_t chunk_overlap_tokens;    /* tokens consecutive windows share; 0: the server's default */
} sift_rerank_options;

/* Connects to host:port. NULL on failure, with the reason in *status (SIFT_UNAVAILABLE). */
sift_client *sift_connect(const char *host, int port, sift_status *status);
/* Sends "authorization: Bearer <key>" with every call (copied). */
void sift_set_api_key(sift_client *client, const char *key);
/* Asks for this model (a name or alias the server serves; copied) in every later call; NULL: the
 * server's default. An unknown name makes calls fail with SIFT_NOT_FOUND naming the models. */
void sift_set_model(sift_client *client, const char *model);
/* Sends this priority with every later call (0, the default, until set). Higher is served first,
 * and it is the call's class: > 0 interactive (served before batch work, even between the
 * sublayers of a batch step), < 0 batch, 0 lets the call's size decide (the server's
 * --interactive-tokens). A setter, not an option field, so programs built against the 0.6
 * library keep its sift_rerank_options layout. */
void sift_set_priority(sift_client *client, int32_t priority);
void sift_close(sift_client *client);

/* Scores n documents against query. On SIFT_OK, results[0..*n_results) are filled (results must
 * have room for n entries). Returns the status code (also in *status). */
int sift_rerank(sift_client *client, const char *query, const char *const *documents, size_t n,
                const sift_rerank_options *options, sift_result *results, size_t *n_results, sift_status *status);

/* *serving = 1 when the server reports SERVING. */
int sift_health(sift_client *client, int *serving, sift_status *status);

#ifdef __cplusplus
}
#endif
