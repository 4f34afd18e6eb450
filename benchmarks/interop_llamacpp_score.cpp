// steerlab-cvec-score: score answer tokens with llama.cpp under a control vector.
//
// Built by benchmarks/interop_llamacpp.py against the llama.cpp source of the
// llama-cpp-python sdist. The model and the control vectors are set up by llama.cpp's own
// common_params_parse + common_init_from_params, i.e. exactly the code path of
// `llama-cli -m MODEL --control-vector-scaled FILE:SCALE`; this program only adds the scoring.
//
// stdin, one request per line (token ids, whitespace separated):
//   P <prompt ids> | <candidate ids> -> "P <log p(candidate | prompt) for each candidate>"
//   G <n> | <prompt ids>             -> "G <n greedy token ids>"
#include "common.h"
#include "arg.h"
#include "llama.h"

#include <clocale>
#include <cmath>
#include <cstdio>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

static std::vector<llama_token> parse_ids(const std::string & text) {
    std::vector<llama_token> ids;
    std::istringstream in(text);
    long v;
    while (in >> v) {
        ids.push_back((llama_token) v);
    }
    return ids;
}

// Decode `tokens` from position 0 on a cleared memory; logits for positions >= first_out
// (batch index i holds the logits of position i).
static bool decode_all(llama_context * ctx, const std::vector<llama_token> & tokens, size_t first_out) {
    llama_memory_clear(llama_get_memory(ctx), true);
    llama_batch batch = llama_batch_init((int32_t) tokens.size(), 0, 1);
    for (size_t i = 0; i < tokens.size(); i++) {
        batch.token[i] = tokens[i];
        batch.pos[i] = (llama_pos) i;
        batch.n_seq_id[i] = 1;
        batch.seq_id[i][0] = 0;
        batch.logits[i] = i >= first_out ? 1 : 0;
    }
    batch.n_tokens = (int32_t) tokens.size();
    const int rc = llama_decode(ctx, batch);
    llama_batch_free(batch);
    return rc == 0;
}

static double log_softmax_at(const float * logits, int n_vocab, llama_token tok) {
    float mx = logits[0];
    for (int j = 1; j < n_vocab; j++) {
        mx = logits[j] > mx ? logits[j] : mx;
    }
    double sum = 0.0;
    for (int j = 0; j < n_vocab; j++) {
        sum += std::exp((double) logits[j] - mx);
    }
    return (double) logits[tok] - mx - std::log(sum);
}

static llama_token argmax(const float * logits, int n_vocab) {
    int best = 0;
    for (int j = 1; j < n_vocab; j++) {
        if (logits[j] > logits[best]) {
            best = j;
        }
    }
    return (llama_token) best;
}

int main(int argc, char ** argv) {
    std::setlocale(LC_NUMERIC, "C");
    common_params params;
    common_init();
    if (!common_params_parse(argc, argv, params, LLAMA_EXAMPLE_COMMON)) {
        return 1;
    }
    llama_backend_init();
    params.warmup = false;
    auto init = common_init_from_params(params);
    llama_context * ctx = init->context();
    if (init->model() == nullptr || ctx == nullptr) {
        fprintf(stderr, "steerlab-cvec-score: failed to load the model or the control vector\n");
        return 1;
    }
    const int n_vocab = llama_vocab_n_tokens(llama_model_get_vocab(init->model()));

    std::string line;
    while (std::getline(std::cin, line)) {
        if (line.size() < 2) {
            continue;
        }
        const char op = line[0];
        const size_t bar = line.find('|');
        if (bar == std::string::npos) {
            fprintf(stderr, "steerlab-cvec-score: missing '|' in request: %s\n", line.c_str());
            return 2;
        }
        const std::string left = line.substr(1, bar - 1);
        const std::string right = line.substr(bar + 1);
        if (op == 'P') {
            const std::vector<llama_token> tokens = parse_ids(left);
            const std::vector<llama_token> cands = parse_ids(right);
            if (tokens.empty() || cands.empty() || !decode_all(ctx, tokens, tokens.size() - 1)) {
                fprintf(stderr, "steerlab-cvec-score: cannot score: %s\n", line.c_str());
                return 3;
            }
            const float * logits = llama_get_logits_ith(ctx, (int32_t) tokens.size() - 1);
            printf("P");
            for (const llama_token c : cands) {
                printf(" %.6f", log_softmax_at(logits, n_vocab, c));
            }
            printf("\n");
        } else if (op == 'G') {
            const int n_new = std::stoi(left);
            std::vector<llama_token> tokens = parse_ids(right);
            printf("G");
            for (int k = 0; k < n_new; k++) {
                if (tokens.empty() || !decode_all(ctx, tokens, tokens.size() - 1)) {
                    fprintf(stderr, "steerlab-cvec-score: cannot decode: %s\n", line.c_str());
                    return 3;
                }
                const llama_token next =
                    argmax(llama_get_logits_ith(ctx, (int32_t) tokens.size() - 1), n_vocab);
                printf(" %d", next);
                tokens.push_back(next);
            }
            printf("\n");
        } else {
            fprintf(stderr, "steerlab-cvec-score: unknown request %c (use P or G)\n", op);
            return 2;
        }
        fflush(stdout);
    }
    llama_backend_free();
    return 0;
}
