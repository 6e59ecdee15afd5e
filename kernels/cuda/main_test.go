package cuda

import (
	"fmt"
	"os"
	"testing"

	"github.com/braidml/braid/kernels/cuda/cudaemu"
)

// TestMain points the GPU tests at the CPU stand-in for the CUDA
// libraries when BRAID_CUDA_EMULATE=1 (package cudaemu).
func TestMain(m *testing.M) {
	if _, err := cudaemu.Use(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	os.Exit(m.Run())
}
