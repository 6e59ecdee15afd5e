package train_test

import (
	"testing"

	"github.com/braidml/braid/kernels/cuda/cudaemu"
)

// TestMain points the GPU tests at the CPU stand-in for the CUDA libraries
// when BRAID_CUDA_EMULATE=1 (package cudaemu).
func TestMain(m *testing.M) { cudaemu.Main(m) }
