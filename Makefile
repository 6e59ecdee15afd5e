# braid: the two commands a new user needs are `make demo` and `make test`.

GO        ?= go
# The Go toolchain is the one go.mod's toolchain line names (it has the standard library's
# security fixes; `make vuln` checks). A Go whose go.env says GOTOOLCHAIN=local ignores that line,
# so make exports it: the go command fetches it from the module proxy once and keeps it in the
# module cache. `make GOTOOLCHAIN=local ...` builds with the Go on PATH instead.
GOTOOLCHAIN ?= $(shell sed -n 's/^toolchain //p' go.mod)
export GOTOOLCHAIN
BIN       := bin/braid
VERSION   := $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -s -w -X main.version=$(VERSION)
GOROOT_SRC := $(shell $(GO) env GOROOT)/src

.PHONY: all build build-cuda gpu-test-bin test test-cuda-emu test-short test-pytorch bench bench-peers lint vuln fuzz fuzz-ci demo clean

all: build

## build: static binary bin/braid (CGO_ENABLED=0)
build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/braid

## build-cuda: bin/braid-cuda, the same commands with GPU support: it loads the NVIDIA
## driver, cuBLAS and NVRTC at run time (nothing CUDA is needed to build it), so it is
## dynamically linked against the C library, unlike bin/braid
build-cuda:
	CGO_ENABLED=0 $(GO) build -tags cuda -trimpath -ldflags '$(LDFLAGS)' -o bin/braid-cuda ./cmd/braid

## gpu-test-bin: the GPU tests as binaries to carry to a GPU machine (scripts/gpu-check.sh)
gpu-test-bin:
	CGO_ENABLED=0 $(GO) test -tags cuda -c -ldflags '-s -w' -o bin/cudamodel.test ./model/cudamodel
	CGO_ENABLED=0 $(GO) test -tags cuda -c -ldflags '-s -w' -o bin/cuda.test ./kernels/cuda
	CGO_ENABLED=0 $(GO) test -tags cuda -c -ldflags '-s -w' -o bin/train.test ./train
	CGO_ENABLED=0 $(GO) test -tags cuda -c -ldflags '-s -w' -o bin/nodetest.test ./node/nodetest
	CGO_ENABLED=0 $(GO) test -c -ldflags '-s -w' -o bin/model.test ./model

## test: every test with the race detector, then without it the tests the race detector skips or
## shortens (allocation counts, the full corpora round trip)
## (the race detector makes sync.Pool drop items, so those skip under -race)
test:
	$(GO) test -race -count=1 ./...
	$(GO) test -count=1 -run 'Alloc|RoundTripCorpora' ./kernels ./model ./train
	$(MAKE) test-cuda-emu

## test-cuda-emu: the GPU tests (bindings, kernels, cudamodel, GPU workers and jobs) with the
## cuda tag on a CPU stand-in for the CUDA libraries (kernels/cuda/cudaemu); needs a C++ compiler
test-cuda-emu:
	@if command -v g++ >/dev/null || command -v clang++ >/dev/null; then \
		BRAID_CUDA_EMULATE=1 $(GO) test -tags cuda -count=1 ./kernels/cuda/... ./model/cudamodel && \
		BRAID_CUDA_EMULATE=1 $(GO) test -tags cuda -count=1 -run 'GPU' ./train ./node/nodetest ./cmd/braid; \
	else echo "test-cuda-emu skipped: no C++ compiler for the CUDA stand-in"; fi

## test-short: the tests without the race detector (faster)
test-short:
	$(GO) test -count=1 ./...

## bench: Go benchmarks and `braid bench kernels`
bench: build
	$(GO) test -run '^$$' -bench . -benchtime 2s ./kernels ./model
	$(BIN) bench kernels

## bench-peers: braid against OpenBLAS and PyTorch, side by side (needs python3-torch, python3-numpy)
bench-peers: build
	scripts/bench-peers.sh

## lint: gofmt and go vet (also for the pure-Go and non-amd64 builds)
lint:
	@out=$$(gofmt -l .); if [ -n "$$out" ]; then echo "gofmt needs to run on:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) vet -tags purego ./...
	$(GO) vet -tags cuda ./...
	CGO_ENABLED=0 $(GO) build -tags cuda -o /dev/null ./cmd/braid
	GOARCH=arm64 $(GO) vet ./...

## vuln: govulncheck (golang.org/x/vuln) on every package, also with -tags cuda, against the Go
## vulnerability database of golang.org/x/vulndb at VULNDB_VERSION, fetched from the module proxy
## and laid out by internal/tools/vulndb in VULNDB_DIR (outside the repo; no other network use).
## Fails on a vulnerability that the code can reach. Raise VULNDB_VERSION to learn newer ones.
VULN_VERSION   := v1.9.0
VULNDB_VERSION := v0.0.0-20261105234957-e22db6528018
VULNDB_DIR     ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/braid/vulndb-$(VULNDB_VERSION)
GOVULNCHECK    := $(GO) run golang.org/x/vuln/cmd/govulncheck@$(VULN_VERSION) -db file://$(VULNDB_DIR)
vuln:
	@test -f $(VULNDB_DIR)/index/modules.json || { \
		$(GO) mod download golang.org/x/vulndb@$(VULNDB_VERSION) && mkdir -p $(dir $(VULNDB_DIR)) && \
		$(GO) run ./internal/tools/vulndb -out $(VULNDB_DIR) \
			-osv $$($(GO) env GOMODCACHE)/golang.org/x/vulndb@$(VULNDB_VERSION)/data/osv; }
	@# A database that knew nothing would pass every scan: it must know an older Go's flaws.
	@$(GOVULNCHECK) -mode query -format json stdlib@v1.26.8 | grep -q '"GO-2026-6809"' || \
		{ echo "vuln: the database in $(VULNDB_DIR) does not know GO-2026-6809 (go1.26.8)"; exit 1; }
	$(GOVULNCHECK) ./...
	$(GOVULNCHECK) -tags cuda ./...

## test-pytorch: PyTorch checks what braid writes (a checkpoint loaded strictly into the Hugging Face
## module names, a LoRA adapter into PEFT-style layers; for the Llama family, checkpoints and an
## adapter that the Go test writes into a temporary directory); needs Debian's python3-torch
test-pytorch:
	@if /usr/bin/python3 -c 'import torch' 2>/dev/null; then \
		/usr/bin/python3 scripts/gen_reference.py --check-braid model/testdata/braid_tiny && \
		/usr/bin/python3 scripts/gen_reference.py --check-adapter model/testdata/braid_lora_tiny && \
		out=$$(mktemp -d) && \
		$(GO) test -count=1 -run '^TestLlamaWritesForPyTorch$$' ./model -args -pytorch-out $$out >/dev/null && \
		/usr/bin/python3 scripts/gen_llama_reference.py --check-braid $$out/llama_tiny $$out/qwen2_tiny $$out/mistral_tiny \
			--check-adapter $$out/llama_lora_tiny && rm -r $$out; \
	else echo "test-pytorch skipped: no python3-torch (apt-get install python3-torch python3-numpy libopenblas0-pthread)"; fi

## fuzz-ci: each fuzz target briefly (FUZZTIME_CI each), on the corpora committed in testdata/fuzz
FUZZTIME_CI ?= 2s
fuzz-ci:
	@$(MAKE) --no-print-directory fuzz FUZZTIME=$(FUZZTIME_CI)

## fuzz: run each fuzz target (every decoder of bytes from disk or network) for FUZZTIME (30s by default)
FUZZTIME ?= 30s
FUZZ_TARGETS := \
	./model/safetensors:FuzzDecode ./model:FuzzLoadCheckpoint ./model:FuzzDecodeConfig ./model:FuzzDecodeAdapter ./model:FuzzGPT2Tokenizer \
	./transport:FuzzReadFrames ./transport/pki:FuzzLoad ./transport/pki:FuzzParseGossipKeys ./allreduce:FuzzDecode \
	./coordinator:FuzzDecodeCommand ./coordinator:FuzzApply ./coordinator:FuzzRestore ./coordinator:FuzzDecodeLog ./coordinator:FuzzGuardedConn \
	./node:FuzzDecodeMeta ./node:FuzzDecodeControlRequest ./node:FuzzDecodeGrads ./node/blobstore:FuzzDecodeRequest ./node/blobstore:FuzzDecodeHeader ./node/blobstore:FuzzReceive \
	./shard:FuzzDecodeHeader ./shard:FuzzDecodeShard ./shard:FuzzDecodeManifest \
	./train:FuzzRestore ./train:FuzzRestoreLoRA ./train:FuzzRestoreDiLoCo
fuzz:
	@for t in $(FUZZ_TARGETS); do pkg=$${t%%:*}; fn=$${t##*:}; \
		echo "== $$pkg $$fn"; $(GO) test -run '^$$' -fuzz "^$$fn$$" -fuzztime $(FUZZTIME) $$pkg || exit 1; done

## demo: train a small model on Go's own source for a minute, then sample from it
demo: build
	scripts/demo.sh

## image: bin/braid, then the container image $(IMAGE) FROM scratch (Dockerfile; nothing is pulled)
IMAGE ?= braid:dev
.PHONY: image compose-test
image: build
	mkdir -p bin/rootfs/tmp && chmod 1777 bin/rootfs/tmp
	docker build -t $(IMAGE) .

## compose-test: 4 nodes in containers (docker-compose.yml): cluster, dataset, a job through node loss
compose-test:
	BRAID_IMAGE=$(IMAGE) scripts/compose-test.sh

clean:
	rm -rf bin out
