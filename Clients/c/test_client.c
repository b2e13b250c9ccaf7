/* test_client HOST PORT: checks the C client against a running server (tiny model).
 * test_client HOST PORT PRIORITY: one call sent with that priority (test.sh reads the server's
 * metrics around it). */
#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sift_client.h"

#define CHECK(cond) do { if (!(cond)) { fprintf(stderr, "FAIL %s:%d: %s\n", __FILE__, __LINE__, #cond); exit(1); } } while (0)

int main(int argc, char **argv) {
    CHECK(argc == 3 || argc == 4);
    sift_status status;
    sift_client *client = sift_connect(argv[1], atoi(argv[2]), &status);
    CHECK(client != NULL);
    if (argc == 4) {
        /* A document of its own per priority: the server's score cache would answer a repeat
         * without a step. */
        char text[64];
        snprintf(text, sizeof text, "Beijing is the capital of China (%s).", argv[3]);
        const char *doc[] = {text};
        sift_result r[1];
        size_t got = 0;
        sift_set_priority(client, atoi(argv[3]));
        CHECK(sift_rerank(client, "What is the capital of China?", doc, 1, NULL, r, &got, &status) == SIFT_OK && got == 1);
        sift_close(client);
        return 0;
    }
    int serving = 0;
    CHECK(sift_health(client, &serving, &status) == SIFT_OK && serving);

    const char *docs[] = {"The capital of China is Beijing.", "Gravity pulls things down.", ""};
    sift_result results[3];
    size_t n = 0;
    sift_rerank_options in_order = {.input_order = 1};
    CHECK(sift_rerank(client, "What is the capital of China?", docs, 3, &in_order, results, &n, &status) == SIFT_OK);
    CHECK(n == 3);
    for (size_t i = 0; i < n; i++) {
        CHECK(results[i].index == i);
        CHECK(results[i].relevance_score >= 0 && results[i].relevance_score <= 1);
        printf("%u\t%.7g\n", results[i].index, results[i].logit);
    }
    /* Ranked and cut. */
    sift_rerank_options top1 = {.top_n = 1};
    CHECK(sift_rerank(client, "What is the capital of China?", docs, 3, &top1, results, &n, &status) == SIFT_OK && n == 1);
    /* Chunking: a long document scored by its best window. */
    char long_doc[4096] = "Beijing is the capital of China.";
    for (int i = 0; i < 60; i++) strcat(long_doc, " Unrelated filler words go here.");
    const char *long_docs[] = {long_doc};
    sift_rerank_options chunked = {.max_length = 96, .chunk_long_documents = 1, .chunk_overlap_tokens = 8};
    CHECK(sift_rerank(client, "What is the capital of China?", long_docs, 1, &chunked, results, &n, &status) == SIFT_OK);
    CHECK(n == 1 && results[0].windows > 1 && results[0].window < results[0].windows && !results[0].truncated);
    sift_rerank_options cut = {.max_length = 96};
    CHECK(sift_rerank(client, "What is the capital of China?", long_docs, 1, &cut, results, &n, &status) == SIFT_OK);
    CHECK(n == 1 && results[0].windows == 1 && results[0].truncated);
    /* An empty instruction is used as given, unlike no instruction (the default). */
    sift_rerank_options empty = {.input_order = 1, .instruction = ""}, unset = {.input_order = 1};
    sift_result a[1], b[1];
    CHECK(sift_rerank(client, "What is the capital of China?", docs, 1, &empty, a, &n, &status) == SIFT_OK);
    CHECK(sift_rerank(client, "What is the capital of China?", docs, 1, &unset, b, &n, &status) == SIFT_OK);
    CHECK(a[0].logit != b[0].logit);
    /* Errors come back as status codes with a message; the connection stays usable. */
    CHECK(sift_rerank(client, "", docs, 3, NULL, results, &n, &status) == SIFT_INVALID_ARGUMENT);
    CHECK(strstr(status.message, "query is empty") != NULL);
    CHECK(sift_health(client, &serving, &status) == SIFT_OK);
    /* A model by name (test.sh serves the tiny model with the alias "c-model"); a server of one
       model answers any name with it (clients of other vendors send names of their own); the default again. */
    sift_set_model(client, "c-model");
    CHECK(sift_rerank(client, "What is the capital of China?", docs, 1, &unset, a, &n, &status) == SIFT_OK);
    CHECK(a[0].logit == b[0].logit);
    sift_set_model(client, "rerank-v3.5");
    CHECK(sift_rerank(client, "What is the capital of China?", docs, 1, &unset, a, &n, &status) == SIFT_OK);
    CHECK(a[0].logit == b[0].logit);
    sift_set_model(client, NULL);
    CHECK(sift_rerank(client, "What is the capital of China?", docs, 1, &unset, a, &n, &status) == SIFT_OK);
    sift_close(client);
    /* Nothing listening. */
    CHECK(sift_connect("127.0.0.1", 1, &status) == NULL && status.code == SIFT_UNAVAILABLE);
    fprintf(stderr, "C client: all checks passed\n");
    return 0;
}
