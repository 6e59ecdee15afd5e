// llamacpp_check: llama.cpp's view of a GGUF file, for model/gguf's
// TestLlamaCpp* tests (go test ./model/gguf -run TestLlamaCpp -args
// -llamacpp PATH). llama.cpp is not a Go module and cannot be fetched
// here; with a checkout of it (checked with the tree of 2025-02-20,
// c392e50), build its library and then this file:
//
//	LLAMA_MAKEFILE=1 GGML_NO_OPENMP=1 make -j llama-simple
//	c++ -std=c++17 -O2 -Iinclude -Iggml/include scripts/llamacpp_check.cpp \
//	    src/*.o ggml/src/*.o ggml/src/ggml-cpu/*.o ggml/src/ggml-cpu/*/*.o -o llamacpp_check -pthread
//
// check MODEL tok FILE            : print the ids llama.cpp tokenizes FILE's bytes into (no specials added)
// check MODEL logits IDS_FILE     : decode the ids (one batch) and print every position's logits
// check MODEL gen N IDS_FILE      : greedy-generate N ids after the prompt ids, print them
// check MODEL quantize OUT        : write MODEL quantized to Q8_0 by llama.cpp (llama-quantize) to OUT
#include "llama.h"
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

static std::string slurp(const char* p) { std::ifstream f(p, std::ios::binary); std::stringstream s; s << f.rdbuf(); return s.str(); }
static std::vector<llama_token> ids(const char* p) { std::vector<llama_token> v; std::istringstream s(slurp(p)); int x; while (s >> x) v.push_back(x); return v; }
static void quiet(ggml_log_level, const char*, void*) {}

int main(int argc, char** argv) {
    if (argc < 4) return 2;
    if (!getenv("VERBOSE")) llama_log_set(quiet, nullptr);
    llama_backend_init();
    auto mp = llama_model_default_params();
    if (std::string(argv[2]) == "quantize") { // llama-quantize's Q8_0 of argv[1] into argv[3]
        auto qp = llama_model_quantize_default_params();
        qp.ftype = LLAMA_FTYPE_MOSTLY_Q8_0;
        qp.nthread = 1;
        return llama_model_quantize(argv[1], argv[3], &qp) ? 1 : 0;
    }
    llama_model* model = llama_model_load_from_file(argv[1], mp);
    if (!model) { fprintf(stderr, "load failed\n"); return 1; }
    const llama_vocab* vocab = llama_model_get_vocab(model);
    std::string mode = argv[2];
    if (mode == "tok") {
        std::string text = slurp(argv[3]);
        std::vector<llama_token> t(text.size() + 16);
        int n = llama_tokenize(vocab, text.data(), text.size(), t.data(), t.size(), false, false);
        if (n < 0) { fprintf(stderr, "tokenize failed %d\n", n); return 1; }
        for (int i = 0; i < n; i++) printf("%d\n", t[i]);
        return 0;
    }
    auto cp = llama_context_default_params();
    cp.n_ctx = 512; cp.n_batch = 512; cp.n_ubatch = 512; cp.n_threads = 1; cp.n_threads_batch = 1;
    cp.type_k = GGML_TYPE_F32; cp.type_v = GGML_TYPE_F32; // the default float16 cache would round every key and value
    llama_context* ctx = llama_init_from_model(model, cp);
    if (!ctx) { fprintf(stderr, "context failed\n"); return 1; }
    int nv = llama_vocab_n_tokens(vocab);
    if (mode == "logits") {
        auto in = ids(argv[3]);
        llama_batch b = llama_batch_init(in.size(), 0, 1);
        for (size_t i = 0; i < in.size(); i++) { b.token[i] = in[i]; b.pos[i] = i; b.n_seq_id[i] = 1; b.seq_id[i][0] = 0; b.logits[i] = 1; }
        b.n_tokens = in.size();
        if (llama_decode(ctx, b)) { fprintf(stderr, "decode failed\n"); return 1; }
        for (size_t i = 0; i < in.size(); i++) { float* l = llama_get_logits_ith(ctx, i); for (int j = 0; j < nv; j++) printf("%.9g\n", l[j]); }
        return 0;
    }
    if (mode == "gen") {
        int n = atoi(argv[3]);
        auto in = ids(argv[4]);
        llama_batch b = llama_batch_get_one(in.data(), in.size());
        for (int k = 0; k < n; k++) {
            if (llama_decode(ctx, b)) { fprintf(stderr, "decode failed\n"); return 1; }
            float* l = llama_get_logits_ith(ctx, -1);
            int best = 0; for (int j = 1; j < nv; j++) if (l[j] > l[best]) best = j;
            printf("%d\n", best);
            static llama_token next; next = best;
            b = llama_batch_get_one(&next, 1);
        }
        return 0;
    }
    return 2;
}
