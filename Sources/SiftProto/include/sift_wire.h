#pragma once
#include <stddef.h>
#include <protobuf-c/protobuf-c.h>
#include "sift.pb-c.h"

/* protobuf-c hands strings back NUL-terminated without their length, so a string holding a NUL
 * byte would be cut short without a word. Unpacking through this allocator records every
 * allocation's size in front of it; sift_wire_string_length then gives a string's true byte
 * length, and a mismatch with strlen exposes the NUL. */
extern ProtobufCAllocator sift_wire_allocator;

/* True length in bytes of a string unpacked with sift_wire_allocator (0 for the empty default). */
size_t sift_wire_string_length(const char *s);

/* sift__v1__frame__unpack / free_unpacked through sift_wire_allocator. NULL: not a Frame. */
Sift__V1__Frame *sift_wire_unpack_frame(size_t length, const uint8_t *data);
void sift_wire_free_frame(Sift__V1__Frame *frame);
