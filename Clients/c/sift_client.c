#include "sift_client.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "sift.pb-c.h"

#define MAX_FRAME_BYTES (16u << 20)

struct sift_client {
    int fd;
    uint64_t next_id;
    char *api_key;
    char *authorization;
    char *model;
    int32_t priority;
};

static int fail(sift_status *status, int code, const char *fmt, ...) {
    if (status) {
        status->code = code;
        va_list args;
        va_start(args, fmt);
        vsnprintf(status->message, sizeof status->message, fmt, args);
        va_end(args);
    }
    return code;
}

sift_client *sift_connect(const char *host, int port, sift_status *status) {
    char service[16];
    snprintf(service, sizeof service, "%d", port);
    struct addrinfo hints = {0}, *addresses = NULL;
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    int rc = getaddrinfo(host, service, &hints, &addresses);
    if (rc != 0) {
        fail(status, SIFT_UNAVAILABLE, "cannot resolve %s: %s", host, gai_strerror(rc));
        return NULL;
    }
    int fd = -1, error = 0;
    for (struct addrinfo *a = addresses; a; a = a->ai_next) {
        fd = socket(a->ai_family, a->ai_socktype, a->ai_protocol);
        if (fd < 0) continue;
        if (connect(fd, a->ai_addr, a->ai_addrlen) == 0) break;
        error = errno;
        close(fd);
        fd = -1;
    }
    freeaddrinfo(addresses);
    if (fd < 0) {
        fail(status, SIFT_UNAVAILABLE, "cannot connect to %s:%d: %s", host, port, strerror(error));
        return NULL;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    sift_client *client = calloc(1, sizeof *client);
    if (!client) {
        close(fd);
        fail(status, SIFT_INTERNAL, "out of memory");
        return NULL;
    }
    client->fd = fd;
    client->next_id = 1;
    fail(status, SIFT_OK, "");
    return client;
}

void sift_set_api_key(sift_client *client, const char *key) {
    free(client->authorization);
    client->authorization = NULL;
    if (!key) return;
    size_t n = strlen(key) + 8;
    client->authorization = malloc(n);
    if (client->authorization) snprintf(client->authorization, n, "Bearer %s", key);
}

void sift_set_model(sift_client *client, const char *model) {
    free(client->model);
    client->model = model ? strdup(model) : NULL;
}

void sift_set_priority(sift_client *client, int32_t priority) { client->priority = priority; }

void sift_close(sift_client *client) {
    if (!client) return;
    if (client->fd >= 0) close(client->fd);
    free(client->authorization);
    free(client->model);
    free(client);
}

static int write_all(int fd, const uint8_t *p, size_t n) {
    while (n) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w <= 0) {
            if (w < 0 && errno == EINTR) continue;
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static int read_all(int fd, uint8_t *p, size_t n) {
    while (n) {
        ssize_t r = recv(fd, p, n, 0);
        if (r <= 0) {
            if (r < 0 && errno == EINTR) continue;
            return -1;
        }
        p += r;
        n -= (size_t)r;
    }
    return 0;
}

/* Sends frame (request id assigned here) and returns the final answer for it (caller frees with
 * sift__v1__frame__free_unpacked), or NULL with *status set. Partial frames are skipped. */
static Sift__V1__Frame *exchange(sift_client *client, Sift__V1__Frame *frame, sift_status *status) {
    Sift__V1__MetadataEntry auth = SIFT__V1__METADATA_ENTRY__INIT;
    Sift__V1__MetadataEntry *metadata[1] = {&auth};
    if (client->authorization) {
        auth.key = "authorization";
        auth.value = client->authorization;
        frame->n_metadata = 1;
        frame->metadata = metadata;
    }
    uint64_t id = client->next_id++;
    frame->request_id = id;
    size_t size = sift__v1__frame__get_packed_size(frame);
    uint8_t *buffer = malloc(size + 4);
    if (!buffer) { fail(status, SIFT_INTERNAL, "out of memory"); return NULL; }
    buffer[0] = (uint8_t)(size >> 24); buffer[1] = (uint8_t)(size >> 16);
    buffer[2] = (uint8_t)(size >> 8);  buffer[3] = (uint8_t)size;
    sift__v1__frame__pack(frame, buffer + 4);
    int sent = write_all(client->fd, buffer, size + 4);
    free(buffer);
    if (sent != 0) { fail(status, SIFT_UNAVAILABLE, "connection lost while sending: %s", strerror(errno)); return NULL; }
    for (;;) {
        uint8_t header[4];
        if (read_all(client->fd, header, 4) != 0) { fail(status, SIFT_UNAVAILABLE, "connection closed by the server"); return NULL; }
        uint32_t length = (uint32_t)header[0] << 24 | (uint32_t)header[1] << 16 | (uint32_t)header[2] << 8 | header[3];
        if (length > MAX_FRAME_BYTES) { fail(status, SIFT_INTERNAL, "server sent a frame of %u bytes", length); return NULL; }
        uint8_t *body = malloc(length ? length : 1);
        if (!body) { fail(status, SIFT_INTERNAL, "out of memory"); return NULL; }
        if (read_all(client->fd, body, length) != 0) { free(body); fail(status, SIFT_UNAVAILABLE, "connection closed mid-frame"); return NULL; }
        Sift__V1__Frame *answer = sift__v1__frame__unpack(NULL, length, body);
        free(body);
        if (!answer) { fail(status, SIFT_INTERNAL, "server sent a frame this client cannot read"); return NULL; }
        int ours = answer->request_id == id;
        int connection_error = answer->request_id == 0 && answer->body_case == SIFT__V1__FRAME__BODY_STATUS;
        if ((ours || connection_error) && answer->body_case == SIFT__V1__FRAME__BODY_STATUS) {
            fail(status, (int)answer->status->code, "%s", answer->status->message);
            sift__v1__frame__free_unpacked(answer, NULL);
            return NULL;
        }
        if (ours && answer->body_case != SIFT__V1__FRAME__BODY_RERANK_PARTIAL) {
            fail(status, SIFT_OK, "");
            return answer;
        }
        sift__v1__frame__free_unpacked(answer, NULL);
    }
}

int sift_rerank(sift_client *client, const char *query, const char *const *documents, size_t n,
                const sift_rerank_options *options, sift_result *results, size_t *n_results, sift_status *status) {
    sift_rerank_options defaults = {0};
    if (!options) options = &defaults;
    Sift__V1__RerankRequest request = SIFT__V1__RERANK_REQUEST__INIT;
    request.query = (char *)query;
    if (options->instruction) { /* set, even to "": used as given */
        request.instruction_presence_case = SIFT__V1__RERANK_REQUEST__INSTRUCTION_PRESENCE_INSTRUCTION;
        request.instruction = (char *)options->instruction;
    }
    request.n_documents = n;
    request.documents = (char **)documents;
    request.top_n = options->top_n;
    request.input_order = options->input_order;
    request.max_tokens_per_document = options->max_tokens_per_document;
    request.max_length = options->max_length;
    request.timeout_ms = options->timeout_ms;
    request.chunk_long_documents = options->chunk_long_documents != 0;
    request.chunk_overlap_tokens = options->chunk_overlap_tokens;
    request.priority = client->priority;
    if (client->model) request.model = client->model;
    Sift__V1__Frame frame = SIFT__V1__FRAME__INIT;
    frame.body_case = SIFT__V1__FRAME__BODY_RERANK_REQUEST;
    frame.rerank_request = &request;
    Sift__V1__Frame *answer = exchange(client, &frame, status);
    if (!answer) return status ? status->code : SIFT_UNKNOWN;
    int code = SIFT_OK;
    if (answer->body_case != SIFT__V1__FRAME__BODY_RERANK_RESPONSE) {
        code = fail(status, SIFT_INTERNAL, "unexpected answer to a rerank call");
    } else {
        Sift__V1__RerankResponse *r = answer->rerank_response;
        size_t count = r->n_results < n ? r->n_results : n;
        for (size_t i = 0; i < count; i++) {
            Sift__V1__RerankResult *x = r->results[i];
            results[i] = (sift_result){x->index, x->relevance_score, x->logit, x->tokens, x->input_tokens, x->truncated,
                                       x->window, x->windows > 0 ? x->windows : 1};
        }
        if (n_results) *n_results = count;
    }
    sift__v1__frame__free_unpacked(answer, NULL);
    return code;
}

int sift_health(sift_client *client, int *serving, sift_status *status) {
    Sift__V1__HealthRequest request = SIFT__V1__HEALTH_REQUEST__INIT;
    Sift__V1__Frame frame = SIFT__V1__FRAME__INIT;
    frame.body_case = SIFT__V1__FRAME__BODY_HEALTH_REQUEST;
    frame.health_request = &request;
    Sift__V1__Frame *answer = exchange(client, &frame, status);
    if (!answer) return status ? status->code : SIFT_UNKNOWN;
    *serving = answer->body_case == SIFT__V1__FRAME__BODY_HEALTH_RESPONSE &&
               answer->health_response->status == SIFT__V1__HEALTH_RESPONSE__SERVING_STATUS__SERVING;
    sift__v1__frame__free_unpacked(answer, NULL);
    return SIFT_OK;
}
