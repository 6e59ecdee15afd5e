// Package archtest keeps the import direction of ARCHITECTURE.md true: each
// package may import only what the design allows, and nothing imports
// upward.
package archtest

import (
	"os/exec"
	"strings"
	"testing"
)

const mod = "github.com/braidml/braid/"

// forbidden lists, for each package (prefix match on the path below the
// module), the imports it must not have (prefix match; "mod:" for packages
// of this module).
var forbidden = map[string][]string{
	"kernels":     {mod, "github.com/"},
	"model":       {mod + "train", mod + "transport", mod + "coordinator", mod + "node", mod + "cmd"},
	"train":       {mod + "transport", mod + "coordinator", mod + "node", mod + "cmd", "github.com/hashicorp/", "github.com/quic-go/"},
	"transport":   {mod + "coordinator", mod + "node", mod + "model", mod + "train", mod + "kernels", mod + "cmd", "github.com/hashicorp/"},
	"coordinator": {mod + "node", mod + "train", mod + "model", mod + "kernels", mod + "cmd", mod + "transport/quic", "github.com/hashicorp/memberlist", "github.com/quic-go/"},
	"node":        {mod + "cmd"},
	"serve":       {mod + "train", mod + "transport", mod + "coordinator", mod + "node", mod + "cmd"},
	"provenance":  {mod + "kernels", mod + "model", mod + "train", mod + "transport", mod + "coordinator", mod + "node", mod + "cmd", mod + "shard", mod + "allreduce"},
	"shard":       {mod + "transport", mod + "coordinator", mod + "node", mod + "train", mod + "allreduce", mod + "cmd", "github.com/hashicorp/", "github.com/quic-go/"},
}

func TestImportDirection(t *testing.T) {
	out, err := exec.Command("go", "list", "-f", "{{.ImportPath}} {{join .Imports \" \"}}", mod+"...").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		fields := strings.Fields(line)
		pkg, imports := strings.TrimPrefix(fields[0], mod), fields[1:]
		for prefix, bad := range forbidden {
			if pkg != prefix && !strings.HasPrefix(pkg, prefix+"/") {
				continue
			}
			for _, imp := range imports {
				for _, b := range bad {
					if strings.HasPrefix(imp, b) && !allowed(pkg, imp) {
						t.Errorf("%s imports %s, which ARCHITECTURE.md does not allow", pkg, imp)
					}
				}
			}
		}
		// Only transport/quic may import quic-go.
		for _, imp := range imports {
			if strings.HasPrefix(imp, "github.com/quic-go/") && pkg != "transport/quic" {
				t.Errorf("%s imports %s; only transport/quic may", pkg, imp)
			}
		}
	}
}

// allowed lists the exceptions to forbidden: a package's own subpackages
// and the few documented cross-links.
func allowed(pkg, imp string) bool {
	rel := strings.TrimPrefix(imp, mod)
	switch {
	case strings.HasPrefix(rel, strings.SplitN(pkg, "/", 2)[0]+"/") || rel == strings.SplitN(pkg, "/", 2)[0]:
		return true // within the same top-level package tree (model → model/safetensors, transport/quic → transport/pki)
	case pkg == "kernels" && imp == "golang.org/x/sys/cpu":
		return true
	case pkg == "kernels/cuda" && strings.HasPrefix(imp, "github.com/ebitengine/purego"):
		return true // the GPU backend's loader (build tag cuda)
	case strings.HasPrefix(pkg, "model") && (strings.HasPrefix(imp, "github.com/pkoukk/tiktoken-go") || rel == "kernels" || rel == "kernels/cuda"):
		return true
	case strings.HasPrefix(pkg, "transport/quic") && strings.HasPrefix(imp, "github.com/quic-go/"):
		return true
	case strings.HasPrefix(pkg, "coordinator") && (strings.HasPrefix(imp, "github.com/hashicorp/raft") || strings.HasPrefix(imp, "github.com/hashicorp/go-hclog") || rel == "transport" || strings.HasPrefix(rel, "transport/memnet")):
		return true
	}
	return false
}
