package train

import "testing"

// TestJobConfigHashIsStable pins JobConfig.hash for a few settings: a
// snapshot records the hash of its job's settings and is refused when it
// differs, so a change of how JobConfig is written (a field's type, say)
// must not change it.
func TestJobConfigHashIsStable(t *testing.T) {
	lora := DefaultLoRAJobConfig()
	targets := DefaultLoRAJobConfig()
	targets.LoRATargets = []string{"c_attn", "mlp.c_proj"}
	for _, c := range []struct {
		name string
		cfg  JobConfig
		want string
	}{
		{"full", DefaultJobConfig(), "cce4870499d9ae81537b03d904aa0cfe659a23ee51c91a2c7497149019ceeed7"},
		{"lora", lora, "c250144aa67fb7d6fbee2f748982dbbad72981aefac8bb31462fbfd1cb8b7c14"},
		{"lora targets", targets, "96221324596fe0ad0ba67271d28aa9c22478bf1505a729d3c1b7396093e20e5f"},
	} {
		if got := c.cfg.hash(); got != c.want {
			t.Errorf("%s: hash %s, want %s (snapshots of jobs with these settings would no longer resume)", c.name, got, c.want)
		}
	}
}
