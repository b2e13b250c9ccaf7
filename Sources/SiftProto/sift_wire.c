#include "sift_wire.h"
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* 16-byte header keeps the returned pointer 16-byte aligned, as malloc's is. */
typedef struct { size_t size; uint64_t magic; } header_t;
#define SIFT_WIRE_MAGIC 0x5349465457495245ull /* "SIFTWIRE" */

static void *wire_alloc(void *data, size_t size) {
    (void)data;
    header_t *h = malloc(sizeof(header_t) + size);
    if (!h) return NULL;
    h->size = size;
    h->magic = SIFT_WIRE_MAGIC;
    return h + 1;
}

static void wire_free(void *data, void *p) {
    (void)data;
    if (p) free((header_t *)p - 1);
}

ProtobufCAllocator sift_wire_allocator = { wire_alloc, wire_free, NULL };

size_t sift_wire_string_length(const char *s) {
    if (s == NULL || s == protobuf_c_empty_string) return 0;
    const header_t *h = (const header_t *)s - 1;
    /* Strings are allocated with room for the terminating NUL. */
    if (h->magic != SIFT_WIRE_MAGIC || h->size == 0) return strlen(s);
    return h->size - 1;
}

Sift__V1__Frame *sift_wire_unpack_frame(size_t length, const uint8_t *data) {
    return sift__v1__frame__unpack(&sift_wire_allocator, length, data);
}

void sift_wire_free_frame(Sift__V1__Frame *frame) {
    sift__v1__frame__free_unpacked(frame, &sift_wire_allocator);
}
