package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"
	"golang.org/x/sys/unix"

	"github.com/braidml/braid/coordinator"
	"github.com/braidml/braid/kernels/cuda"
	"github.com/braidml/braid/node"
	"github.com/braidml/braid/transport/pki"
)

// `braid dev` is a throw-away cluster on this machine in one command, as
// `consul agent -dev` and `ray start --head` are: a CA, a certificate per
// node, an API token and free ports chosen for you, N nodes on loopback,
// then the API's address, the token and what to type next.
//
// The nodes run inside this process rather than as child processes of this
// binary. One process gets the signal, so Ctrl-C and SIGTERM stop every
// node in the order dev chooses (followers one at a time, then the leader:
// devStop) and then remove the directory; no node can outlive dev
// (child processes would, were dev itself killed with SIGKILL); and no
// binary has to be found again on disk. The nodes are the same node.Node
// that `braid node` runs, with the same QUIC, mutual TLS, gossip
// encryption and Raft on disk: only their logs go to files. What this
// costs: one node cannot be killed alone to watch a failover (scripts/demo.sh
// therefore keeps its separate `braid node` processes).

// devDefaultAPIPort is the first node's API port: the CLI's default --api,
// so that `braid status` needs no flag while a dev cluster runs.
const devDefaultAPIPort = 7950

// devReadyLine starts the line `braid dev` prints once every node is a
// member of the committed epoch and there is a leader; scripts and tests
// wait for it.
const devReadyLine = "braid dev: ready"

// devStartTimeout bounds how long the nodes may take to form the cluster.
const devStartTimeout = 60 * time.Second

func devCommand() *cli.Command {
	return &cli.Command{
		Name:  "dev",
		Usage: "run a throw-away local cluster in this process: CA, certificates, token and ports made for you",
		Description: "Starts --nodes nodes on 127.0.0.1 (QUIC with mutual TLS, a CA made now), waits until\n" +
			"they have a leader and all are members, and prints the API's address, its token and the\n" +
			"commands to try. Ctrl-C or SIGTERM stops every node gracefully and exits 0. Without\n" +
			"--dir, the CA, the nodes' data and logs live in a new temporary directory that is\n" +
			"removed on exit; a --dir is kept. For real clusters use `braid node` (docs/OPERATIONS.md).",
		Flags: []cli.Flag{
			&cli.IntFlag{Name: "nodes", Value: 3, Usage: "how many nodes (1 to 16)"},
			&cli.StringFlag{Name: "dir", Usage: "`DIR` for the CA, the token, the nodes' data and logs: new or empty, kept on exit (default: a temporary directory, removed on exit)"},
			&cli.IntFlag{Name: "api-port", Value: devDefaultAPIPort, Usage: "the first node's HTTP API `PORT` on 127.0.0.1 (0: any free port); the others get free ports"},
			// cpu rather than braid node's auto: a dev cluster's nodes share
			// one device, and a trial run should not take a GPU unasked.
			&cli.StringFlag{Name: "device", Value: "cpu", Usage: "where the nodes compute: cpu, cuda, cuda:N or auto (all nodes share the device)"},
			&cli.StringFlag{Name: "log-level", Value: "info", Usage: "the nodes' log files' level: debug, info, warn or error"},
		},
		Action: runDev,
	}
}

// devNode is one node of a dev cluster.
type devNode struct {
	name    string
	n       *node.Node
	gossip  string // 127.0.0.1:port
	quic    string
	api     string // http://127.0.0.1:port
	logPath string
	logFile *os.File
	log     *slog.Logger // to logFile
	unrec   func()       // removes the CLI's record of its API
}

func runDev(c *cli.Context) (err error) {
	nodes, apiPort := c.Int("nodes"), c.Int("api-port")
	if nodes < 1 || nodes > 16 {
		return fmt.Errorf("--nodes %d: want 1 to 16 (a dev cluster shares this machine's cores)", nodes)
	}
	if apiPort < 0 || apiPort > 65535 {
		return fmt.Errorf("--api-port %d: want a port number, or 0 for any free port", apiPort)
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(c.String("log-level"))); err != nil {
		return fmt.Errorf("--log-level: %w", err)
	}
	kind, gpu, _, err := chooseDevice(c.String("device"), cuda.Devices)
	if err != nil {
		return err
	}
	unix.Umask(0o077) // as `braid node`: what the nodes write is the user's own
	dir, temp, err := devDir(c.String("dir"))
	if err != nil {
		return err
	}
	out := c.App.Writer
	defer func() { // after devStop (deferred below): the nodes no longer write
		switch {
		case !temp:
		case err != nil:
			fmt.Fprintf(c.App.ErrWriter, "braid dev: kept %s for the nodes' logs\n", dir)
		default:
			if rmErr := os.RemoveAll(dir); rmErr != nil {
				fmt.Fprintf(c.App.ErrWriter, "braid dev: removing %s: %v\n", dir, rmErr)
			}
		}
	}()

	tlsDir := filepath.Join(dir, "tls")
	if err := pki.InitCA(tlsDir); err != nil {
		return err
	}
	token, err := devToken(dir)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "braid dev: %d node(s) on 127.0.0.1, computing on %s; CA, token, data and logs in %s\n", nodes, kind, dir)

	var started []*devNode
	defer func() { devStop(started, out) }()
	var join string
	for i := 1; i <= nodes; i++ {
		name := fmt.Sprintf("n%d", i)
		if err := pki.Issue(tlsDir, name, []string{"127.0.0.1", "localhost"}, 365*24*time.Hour); err != nil {
			return err
		}
		port := 0
		if i == 1 {
			port = apiPort
		}
		d, err := devStartNode(c.Context, dir, tlsDir, name, join, nodes, port, token, kind, gpu, level)
		if err != nil {
			return err
		}
		started = append(started, d)
		if i == 1 {
			join = d.gossip
		}
		fmt.Fprintf(out, "  %s  API %s  gossip %s  QUIC %s  log %s\n", d.name, d.api, d.gossip, d.quic, d.logPath)
	}

	leader, err := devWaitReady(c.Context, started)
	if err != nil {
		if c.Context.Err() != nil {
			return nil // interrupted while starting: stop what started, as after ready
		}
		return err
	}
	api, tokenFile := started[0].api, filepath.Join(dir, node.APITokenFile)
	fmt.Fprintf(out, "\nAPI    %s (every node's API takes the same token)\n", api)
	fmt.Fprintf(out, "token  %s (also in %s)\n", token, tokenFile)
	// The token goes in the URL's fragment, which the browser never sends:
	// the console's script keeps it in the tab and sends a bearer header.
	fmt.Fprintf(out, "web console  %s/#token=%s\n\n", api, token)
	fmt.Fprintln(out, "In another shell:")
	fmt.Fprintf(out, "  export BRAID_API=%s BRAID_TOKEN=%s\n", api, token)
	fmt.Fprintln(out, "  braid status")
	fmt.Fprintln(out, "  braid data prepare --input DOCS/ --out /tmp/mydata --name mydata && braid data push /tmp/mydata")
	fmt.Fprintln(out, "  braid job watch $(braid job submit --model models/base-en --dataset mydata --steps 100)")
	if strings.HasSuffix(api, fmt.Sprintf(":%d", devDefaultAPIPort)) {
		fmt.Fprintln(out, "(as this user, the CLI finds the API and its token by itself: the export is for other users)")
	} else {
		fmt.Fprintln(out, "(as this user, the CLI finds the token by itself: BRAID_API alone is enough)")
	}
	fmt.Fprintln(out)
	fmt.Fprintf(out, "%s: %d node(s), leader %s, API %s; Ctrl-C stops the cluster\n", devReadyLine, nodes, leader, api)

	<-c.Context.Done()
	return nil
}

// devDir makes the dev cluster's directory: flagDir, which must be new or
// empty and is kept, or a new temporary one (temp), removed on exit.
func devDir(flagDir string) (dir string, temp bool, err error) {
	if flagDir == "" {
		dir, err := os.MkdirTemp("", "braid-dev-")
		return dir, true, err
	}
	if err := os.MkdirAll(flagDir, 0o700); err != nil {
		return "", false, fmt.Errorf("--dir: %w", err)
	}
	entries, err := os.ReadDir(flagDir)
	if err != nil {
		return "", false, fmt.Errorf("--dir: %w", err)
	}
	if len(entries) > 0 {
		return "", false, fmt.Errorf("--dir %s is not empty: braid dev starts a new cluster every time; give a new or empty directory, or none for a temporary one", flagDir)
	}
	return flagDir, false, nil
}

// devToken makes the cluster's API token and writes it to DIR/api-token,
// for BRAID_TOKEN_FILE; every node is given the same one (devStartNode).
func devToken(dir string) (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("the API token: %w", err)
	}
	token := hex.EncodeToString(b)
	return token, os.WriteFile(filepath.Join(dir, node.APITokenFile), []byte(token+"\n"), 0o600)
}

// devStartNode starts node name with its data in DIR/name and its log in
// DIR/name.log, on ports that were free a moment ago (apiPort for its API
// unless 0). When another process takes one of the chosen gossip or QUIC
// ports in between, it tries again on new ones.
func devStartNode(ctx context.Context, dir, tlsDir, name, join string, expect, apiPort int, token, kind string, gpu *cuda.DeviceInfo, level slog.Level) (*devNode, error) {
	dataDir := filepath.Join(dir, name)
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return nil, err
	}
	// The token goes where a node keeps the one it generates rather than in
	// Config.HTTPToken: the node then records its token file for this user's
	// CLI (apitoken.go), which finds it without BRAID_TOKEN.
	if err := os.WriteFile(filepath.Join(dataDir, node.APITokenFile), []byte(token+"\n"), 0o600); err != nil {
		return nil, err
	}
	logPath := filepath.Join(dir, name+".log")
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	logger := slog.New(slog.NewTextHandler(logFile, &slog.HandlerOptions{Level: level}))
	for attempt := 1; ; attempt++ {
		ports, err := devFreePorts(3)
		if err != nil {
			logFile.Close()
			return nil, err
		}
		if apiPort != 0 {
			ports[2] = apiPort
		}
		cfg := node.DefaultConfig()
		cfg.Name, cfg.DataDir, cfg.TLSDir, cfg.Build = name, dataDir, tlsDir, version
		cfg.GossipAddr = fmt.Sprintf("127.0.0.1:%d", ports[0])
		cfg.QUICAddr = fmt.Sprintf("127.0.0.1:%d", ports[1])
		cfg.HTTPAddr = fmt.Sprintf("127.0.0.1:%d", ports[2])
		cfg.Profile, cfg.Coordinator = "local", coordinator.LocalConfig()
		cfg.BootstrapExpect, cfg.Device, cfg.GPU = expect, kind, gpu
		cfg.Join = []string{cfg.GossipAddr}
		if join != "" {
			cfg.Join = []string{join}
		}
		n, err := node.New(cfg, node.Deps{Logger: logger})
		if err == nil {
			d := &devNode{name: name, n: n, gossip: cfg.GossipAddr, quic: cfg.QUICAddr, api: n.APIURL(), logPath: logPath, logFile: logFile, log: logger}
			d.unrec = recordAPI(n, name, logger)
			return d, nil
		}
		inUse := errors.Is(err, syscall.EADDRINUSE) || strings.Contains(err.Error(), "address already in use")
		if inUse && apiPort != 0 && devPortTaken(apiPort) {
			logFile.Close()
			return nil, fmt.Errorf("--api-port %d is in use (another braid node or dev cluster?): stop it, or give --api-port 0 for any free port", apiPort)
		}
		if !inUse || attempt == 3 || ctx.Err() != nil {
			logFile.Close()
			return nil, fmt.Errorf("starting %s: %w (its log: %s)", name, err, logPath)
		}
		logger.Info("a chosen port was taken meanwhile; trying new ones", "err", err)
	}
}

// devFreePorts returns n loopback ports that were free, for TCP and UDP
// both (gossip and the bulk transport use both at one number), a moment
// ago.
func devFreePorts(n int) ([]int, error) {
	var ports []int
	for tries := 0; len(ports) < n; tries++ {
		if tries == 100 {
			return nil, errors.New("no free loopback ports for TCP and UDP at once")
		}
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("finding a free port: %w", err)
		}
		p := l.Addr().(*net.TCPAddr).Port
		u, err := net.ListenPacket("udp", fmt.Sprintf("127.0.0.1:%d", p))
		l.Close()
		if err != nil {
			continue
		}
		u.Close()
		ports = append(ports, p)
	}
	return ports, nil
}

// devPortTaken says whether a TCP listener cannot be had on port.
func devPortTaken(port int) bool {
	l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		return true
	}
	l.Close()
	return false
}

// devWaitReady waits until every node has applied an epoch of all the
// nodes (the leader commits one once all have joined) and knows the
// leader, and returns the leader's name.
func devWaitReady(ctx context.Context, nodes []*devNode) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, devStartTimeout)
	defer cancel()
	for _, d := range nodes {
		if _, err := d.n.Coordinator().WaitEpoch(ctx, func(e coordinator.Epoch) bool { return len(e.Members) == len(nodes) }); err != nil {
			return "", fmt.Errorf("the %d nodes formed no cluster within %v (%s has epoch %v): see the nodes' logs: %w",
				len(nodes), devStartTimeout, d.name, d.n.Status().Epoch.Members, err)
		}
	}
	// The epoch is committed, so there was a leader a moment ago; the
	// first node's view of it is the one the API reports.
	return nodes[0].n.Status().Leader, nil
}

// devStop stops the nodes gracefully, as SIGTERM stops `braid node`: the
// followers one at a time, then the leader, so that while a quorum
// remains the leader commits each follower's leave, and no election
// starts among nodes that are about to stop. The last one or two take
// seconds: Raft keeps dialling the peer that left before them until its
// dial times out (2 s).
func devStop(nodes []*devNode, out io.Writer) {
	if len(nodes) == 0 {
		return
	}
	start := time.Now()
	var leader *devNode
	for _, d := range nodes {
		if d.n.Coordinator().IsLeader() {
			leader = d
			break
		}
	}
	var order []*devNode
	for _, d := range nodes {
		if d != leader {
			order = append(order, d)
		}
	}
	if leader != nil {
		order = append(order, leader)
	}
	for i, d := range order {
		devStopNode(d, out, i == len(order)-1)
	}
	fmt.Fprintf(out, "braid dev: stopped %d node(s) in %.1fs\n", len(nodes), time.Since(start).Seconds())
}

// devStopNode stops d. The last node's leave fails more often than not
// (the follower before it left a Raft configuration of two it cannot
// shrink without it): that goes to its log, not to the user.
func devStopNode(d *devNode, out io.Writer, last bool) {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	d.unrec()
	if err := d.n.Shutdown(ctx); err != nil {
		if last {
			d.log.Info("the last node of the dev cluster stopped without a committed leave", "err", err)
		} else {
			fmt.Fprintf(out, "braid dev: stopping %s: %v (its log: %s)\n", d.name, err, d.logPath)
		}
	}
	d.logFile.Close()
}
