/* Example: sift-rerank HOST:PORT QUERY < documents (one per line)
 * Prints "index<TAB>logit<TAB>score" per document, best first. API key: $SIFT_API_KEY. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sift_client.h"

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s HOST:PORT QUERY < documents (one per line)\n", argv[0]);
        return 2;
    }
    char *colon = strrchr(argv[1], ':');
    if (!colon) { fprintf(stderr, "sift-rerank: %s is not HOST:PORT\n", argv[1]); return 2; }
    *colon = 0;
    size_t n = 0, cap = 16;
    char **docs = malloc(cap * sizeof *docs);
    char *line = NULL;
    size_t len = 0;
    ssize_t got;
    while ((got = getline(&line, &len, stdin)) >= 0) {
        if (got > 0 && line[got - 1] == '\n') line[got - 1] = 0;
        if (n == cap) docs = realloc(docs, (cap *= 2) * sizeof *docs);
        docs[n++] = strdup(line);
    }
    free(line);
    sift_status status;
    sift_client *client = sift_connect(argv[1], atoi(colon + 1), &status);
    if (!client) { fprintf(stderr, "sift-rerank: %s\n", status.message); return 1; }
    if (getenv("SIFT_API_KEY")) sift_set_api_key(client, getenv("SIFT_API_KEY"));
    sift_result *results = calloc(n ? n : 1, sizeof *results);
    size_t count = 0;
    int code = sift_rerank(client, argv[2], (const char *const *)docs, n, NULL, results, &count, &status);
    if (code != SIFT_OK) {
        fprintf(stderr, "sift-rerank: status %d: %s\n", code, status.message);
    } else {
        for (size_t i = 0; i < count; i++) printf("%u\t%.7g\t%.7g\n", results[i].index, results[i].logit, results[i].relevance_score);
    }
    sift_close(client);
    for (size_t i = 0; i < n; i++) free(docs[i]);
    free(docs);
    free(results);
    return code == SIFT_OK ? 0 : 1;
}
