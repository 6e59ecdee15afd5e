package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"
	"golang.org/x/sys/unix"

	"github.com/braidml/braid/coordinator"
	"github.com/braidml/braid/kernels/cuda"
	"github.com/braidml/braid/node"
)

func nodeCommand() *cli.Command {
	env := func(name string) []string {
		return []string{"BRAID_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))}
	}
	d := node.DefaultConfig()
	return &cli.Command{
		Name:  "node",
		Usage: "run a braid server: gossip, Raft coordinator, QUIC transport, HTTP API",
		Description: "Every flag can also come from a BRAID_* environment variable (BRAID_NAME, BRAID_JOIN, ...)\n" +
			"or from a JSON file given with --config-file whose keys are the flag names; the command\n" +
			"line wins over the environment, which wins over the file. SIGTERM or Ctrl-C leaves the\n" +
			"cluster gracefully (leadership is handed over first). SIGHUP reloads the node's certificate,\n" +
			"key, CA bundle (ca.pem) and gossip keys from --tls-dir without a restart.",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "config-file", EnvVars: env("config-file"), Usage: "JSON `FILE` of flag values"},
			&cli.StringFlag{Name: "name", EnvVars: env("name"), Usage: "this node's name (its certificate's)"},
			&cli.StringFlag{Name: "data-dir", EnvVars: env("data-dir"), Usage: "`DIR` for Raft state"},
			&cli.StringFlag{Name: "gossip-addr", Value: d.GossipAddr, EnvVars: env("gossip-addr"), Usage: "gossip `HOST:PORT` (TCP and UDP)"},
			&cli.StringFlag{Name: "quic-addr", Value: d.QUICAddr, EnvVars: env("quic-addr"), Usage: "QUIC `HOST:PORT` (UDP; the bulk transport listens on TCP at the same port)"},
			&cli.StringFlag{Name: "bulk-transport", Value: d.BulkTransport, EnvVars: env("bulk-transport"), Usage: "what carries all-reduce, shard and checkpoint traffic: tls-tcp (TLS 1.3 over TCP, same certificates) or quic; the same on every node"},
			&cli.StringFlag{Name: "advertise", EnvVars: env("advertise"), Usage: "`HOST` peers reach this node at"},
			&cli.StringSliceFlag{Name: "join", EnvVars: env("join"), Usage: "gossip `HOST:PORT` of any members (comma-separated or repeated)"},
			&cli.IntFlag{Name: "bootstrap-expect", EnvVars: env("bootstrap-expect"), Usage: "servers to wait for before forming a new cluster (0: join an existing one)"},
			&cli.StringFlag{Name: "tls-dir", EnvVars: env("tls-dir"), Usage: "`DIR` from braid ca: ca.pem, NAME.pem, NAME-key.pem, gossip.key"},
			&cli.StringFlag{Name: "http", Value: d.HTTPAddr, EnvVars: env("http"), Usage: "HTTP API `HOST:PORT` (empty: off)"},
			&cli.BoolFlag{Name: "http-tls", EnvVars: env("http-tls"), Usage: "serve the API over HTTPS with this node's certificate (clients verify it with the cluster's ca.pem: --ca)"},
			&cli.StringFlag{Name: "token", EnvVars: []string{"BRAID_TOKEN", "BRAID_HTTP_TOKEN"}, Usage: "bearer token the API requires (default: DATA_DIR/api-token, generated at the first start)"},
			&cli.StringFlag{Name: "token-file", EnvVars: env("token-file"), Usage: "read the API's bearer token from `FILE`"},
			&cli.StringFlag{Name: "http-token", Hidden: true, Usage: "old name of --token"},
			&cli.StringFlag{Name: "profile", Value: "lan", EnvVars: env("profile"), Usage: "timing: lan, local (one machine) or wan"},
			&cli.StringFlag{Name: "device", Value: "auto", EnvVars: env("device"), Usage: "where this node computes: cpu, cuda (GPU 0), cuda:N, or auto (GPU 0 if there is a usable GPU, else the CPU); jobs run on the nodes of their --device"},
			&cli.StringFlag{Name: "log-format", Value: "text", EnvVars: env("log-format"), Usage: "text or json"},
			&cli.StringFlag{Name: "log-level", Value: "info", EnvVars: env("log-level"), Usage: "debug, info, warn or error"},
			&cli.Int64Flag{Name: "max-upload", EnvVars: env("max-upload"), Usage: "largest object (a shard, a model's weights) a client may upload through the API, in `BYTES` (0: 64 GiB)"},
			&cli.Int64Flag{Name: "max-pending-upload", EnvVars: env("max-pending-upload"), Usage: "most `BYTES` of uploaded objects that no dataset or job names yet (awaiting registration or collection); an upload beyond it is refused with 507. At least --max-upload, and at least the largest dataset or model pushed here (0: 4 × --max-upload)"},
			&cli.DurationFlag{Name: "gc-grace", EnvVars: env("gc-grace"), Usage: "objects that no dataset or job names are deleted once older than `DURATION`: long enough to upload a whole dataset and register it (0: 1h; at least 1m)"},
			&cli.DurationFlag{Name: "reap-after", EnvVars: env("reap-after"), Usage: "a member that failed or left is forgotten (no longer listed, free to join again as new) after `DURATION` (0: 72h)"},
		},
		Before: loadConfigFile,
		Action: runNode,
	}
}

// loadConfigFile sets every flag named in --config-file that neither the
// command line nor the environment set.
func loadConfigFile(c *cli.Context) error {
	path := c.String("config-file")
	if path == "" {
		return nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("--config-file: %w", err)
	}
	var values map[string]any
	if err := json.Unmarshal(b, &values); err != nil {
		return fmt.Errorf("--config-file %s: not a JSON object of flag values: %w", path, err)
	}
	known := map[string]bool{}
	for _, f := range c.Command.Flags {
		known[f.Names()[0]] = true
	}
	for k, v := range values {
		if !known[k] || k == "config-file" {
			return fmt.Errorf("--config-file %s: unknown key %q", path, k)
		}
		if c.IsSet(k) {
			continue
		}
		var s string
		switch v := v.(type) {
		case string:
			s = v
		case float64, bool:
			s = fmt.Sprint(v)
		case []any:
			var parts []string
			for _, p := range v {
				parts = append(parts, fmt.Sprint(p))
			}
			s = strings.Join(parts, ",")
		default:
			return fmt.Errorf("--config-file %s: key %q has an unsupported value %v", path, k, v)
		}
		if err := c.Set(k, s); err != nil {
			return fmt.Errorf("--config-file %s: key %q: %w", path, k, err)
		}
	}
	return nil
}

func runNode(c *cli.Context) error {
	var level slog.Level
	if err := level.UnmarshalText([]byte(c.String("log-level"))); err != nil {
		return fmt.Errorf("--log-level: %w", err)
	}
	opts := &slog.HandlerOptions{Level: level}
	var h slog.Handler = slog.NewTextHandler(c.App.ErrWriter, opts)
	switch c.String("log-format") {
	case "json":
		h = slog.NewJSONHandler(c.App.ErrWriter, opts)
	case "text":
	default:
		return fmt.Errorf("--log-format %q: want text or json", c.String("log-format"))
	}
	// Everything the node writes is for its own user only: the node's own
	// files have explicit private modes, and the umask covers what the
	// libraries it uses create (Raft's snapshots, model files).
	unix.Umask(0o077)
	cfg := node.DefaultConfig()
	cfg.Name, cfg.DataDir, cfg.GossipAddr, cfg.QUICAddr = c.String("name"), c.String("data-dir"), c.String("gossip-addr"), c.String("quic-addr")
	cfg.Advertise, cfg.BootstrapExpect, cfg.TLSDir = c.String("advertise"), c.Int("bootstrap-expect"), c.String("tls-dir")
	cfg.HTTPAddr, cfg.HTTPTLS, cfg.Profile, cfg.Build = c.String("http"), c.Bool("http-tls"), c.String("profile"), version
	cfg.MaxUploadBytes, cfg.MaxPendingUploadBytes, cfg.GCGrace = c.Int64("max-upload"), c.Int64("max-pending-upload"), c.Duration("gc-grace")
	cfg.ReapAfter = c.Duration("reap-after")
	cfg.BulkTransport = c.String("bulk-transport")
	tok, err := nodeToken(c)
	if err != nil {
		return err
	}
	cfg.HTTPToken = tok
	for _, j := range c.StringSlice("join") {
		for _, p := range strings.Split(j, ",") {
			if p = strings.TrimSpace(p); p != "" {
				cfg.Join = append(cfg.Join, p)
			}
		}
	}
	if cfg.Profile == "local" {
		cfg.Coordinator = coordinator.LocalConfig()
	}
	if cfg.TLSDir == "" {
		return fmt.Errorf("--tls-dir is required: nodes only talk over mutual TLS (create one with `braid ca init` and `braid ca issue`)")
	}
	logger := slog.New(h)
	// What libraries log to slog.Default or the standard log package
	// (a transport without a logger of its own, quic-go's warnings) goes
	// through the same handler: one format on stderr, JSON lines only
	// with --log-format json.
	slog.SetDefault(logger)
	kind, gpu, why, err := chooseDevice(c.String("device"), cuda.Devices)
	if err != nil {
		return err
	}
	cfg.Device, cfg.GPU = kind, gpu
	if gpu != nil {
		logger.Info("computing on the GPU", "node", cfg.Name, "device", gpu.String(), "why", why)
	} else {
		logger.Info("computing on the CPU", "node", cfg.Name, "why", why)
	}
	// From here an error that ends the node goes through its logger, so
	// that with --log-format json even the last line on stderr is JSON.
	logged := func(err error) error {
		if err == nil {
			return nil
		}
		logger.Error("the node stopped on an error", "err", err)
		return loggedError{err}
	}
	n, err := node.New(cfg, node.Deps{Logger: logger})
	if err != nil {
		return logged(err)
	}
	if u := n.APIURL(); u != "" {
		fmt.Fprintf(c.App.Writer, "braid node %s: API %s\n", cfg.Name, u)
		// For the CLI of this user on this machine (apitoken.go).
		defer recordAPI(n, cfg.Name, logger)()
	}
	stopReload := reloadOnSIGHUP(n, logger)
	defer stopReload()
	select {
	case <-c.Context.Done():
	case <-n.Stopped(): // braid leave, or a GPU fault: it has left already
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	return logged(n.Shutdown(ctx))
}

// loggedError is an error the command has logged already: main does not
// print it again.
type loggedError struct{ error }

func (e loggedError) Unwrap() error { return e.error }

// reloadOnSIGHUP makes every SIGHUP reload n's credentials and gossip
// keys (node.Node.Reload) until the returned function is called.
func reloadOnSIGHUP(n *node.Node, logger *slog.Logger) (stop func()) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		for {
			select {
			case <-hup:
				if err := n.Reload(); err != nil {
					logger.Error("SIGHUP: reload failed; the node keeps the credentials it had", "err", err)
				} else {
					logger.Info("SIGHUP: reloaded the TLS credentials and gossip keys")
				}
			case <-done:
				return
			}
		}
	}()
	return func() {
		signal.Stop(hup)
		close(done)
		<-finished
	}
}

// nodeToken is the API token `braid node` was given: --token (or its old
// name --http-token), or the content of --token-file; "" for the node's
// own, generated one.
func nodeToken(c *cli.Context) (string, error) {
	tok := c.String("token")
	if tok == "" {
		tok = c.String("http-token")
	}
	if path := c.String("token-file"); path != "" {
		if tok != "" {
			return "", fmt.Errorf("--token and --token-file: give one")
		}
		var err error
		if tok, err = node.ReadTokenFile(path); err != nil {
			return "", fmt.Errorf("--token-file: %w", err)
		}
	}
	return tok, nil
}

// chooseDevice reads `braid node --device` (cpu, cuda, cuda:N or auto) and
// picks the device the node computes on among the GPUs devices lists
// (cuda.Devices): the kind, the GPU for cuda, and in words why. auto takes
// GPU 0 when there is one and otherwise the CPU; an explicit cuda that
// cannot be had is an error naming why.
func chooseDevice(flag string, devices func() ([]cuda.DeviceInfo, error)) (kind string, gpu *cuda.DeviceInfo, why string, err error) {
	kind, index, err := cuda.ParseDevice(flag)
	if err != nil {
		return "", nil, "", fmt.Errorf("--device: %w", err)
	}
	if kind == coordinator.DeviceCPU {
		return kind, nil, "--device cpu", nil
	}
	devs, err := devices()
	if err == nil && len(devs) == 0 {
		err = cuda.ErrNoDevice
	}
	if err != nil {
		if kind == "auto" {
			return coordinator.DeviceCPU, nil, fmt.Sprintf("--device auto: %v", err), nil
		}
		return "", nil, "", fmt.Errorf("--device %s: %w", flag, err)
	}
	for i := range devs {
		if devs[i].Index == index {
			return coordinator.DeviceCUDA, &devs[i], fmt.Sprintf("--device %s: %d GPU(s) found", flag, len(devs)), nil
		}
	}
	return "", nil, "", fmt.Errorf("--device %s: no GPU cuda:%d among the %d found (%s)", flag, index, len(devs), gpuList(devs))
}

func gpuList(devs []cuda.DeviceInfo) string {
	var parts []string
	for _, d := range devs {
		parts = append(parts, fmt.Sprintf("cuda:%d %s", d.Index, d.Name))
	}
	return strings.Join(parts, ", ")
}
