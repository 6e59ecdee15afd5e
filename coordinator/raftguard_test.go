package coordinator

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/braidml/braid/transport"
	"github.com/braidml/braid/transport/memnet"
	"github.com/hashicorp/go-msgpack/v2/codec"
	"github.com/hashicorp/raft"
)

// allowPeers is a RaftPeers that allows names.
func allowPeers(names ...string) RaftPeers {
	return func(name string) bool { return slices.Contains(names, name) }
}

func memAddr(name string) raft.ServerAddress {
	return ServerAddress(name, memnet.Address(transport.PeerID(name)))
}

// header is the RPC header raft writes on server name.
func header(name string) raft.RPCHeader {
	return raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte(name), Addr: []byte(memAddr(name))}
}

// encodeRPC frames req as raft's NetworkTransport does: the type byte, then
// the request in msgpack.
func encodeRPC(t testing.TB, typ uint8, req any) []byte {
	t.Helper()
	var b bytes.Buffer
	b.WriteByte(typ)
	if err := codec.NewEncoder(&b, &codec.MsgpackHandle{}).Encode(req); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// TestStreamLayerChecksRPCs: an accepted raft stream delivers, byte for
// byte, the RPCs whose sender is an allowed peer named in their header, and
// is closed at the first RPC that is not, before raft reads any of it.
func TestStreamLayerChecksRPCs(t *testing.T) {
	snapshot := bytes.Repeat([]byte{0xff, rpcAppendEntries}, 50) // not an RPC: passed on unread
	good := func(t *testing.T) [][]byte {
		return [][]byte{
			encodeRPC(t, rpcAppendEntries, &raft.AppendEntriesRequest{
				RPCHeader: header("a"), Term: 3, Leader: []byte(memAddr("a")), PrevLogEntry: 7, PrevLogTerm: 2,
				Entries:           []*raft.Log{{Index: 8, Term: 3, Type: raft.LogCommand, Data: []byte("x"), AppendedAt: time.Unix(1, 2)}},
				LeaderCommitIndex: 8,
			}),
			append(encodeRPC(t, rpcInstallSnapshot, &raft.InstallSnapshotRequest{
				RPCHeader: header("a"), Term: 3, Leader: []byte(memAddr("a")), LastLogIndex: 9, Size: int64(len(snapshot)),
			}), snapshot...),
			encodeRPC(t, rpcRequestVote, &raft.RequestVoteRequest{RPCHeader: header("a"), Term: 4, Candidate: []byte(memAddr("a"))}),
			encodeRPC(t, rpcRequestPreVote, &raft.RequestPreVoteRequest{RPCHeader: header("a"), Term: 5}),
			encodeRPC(t, rpcTimeoutNow, &raft.TimeoutNowRequest{RPCHeader: header("a")}),
		}
	}
	withHeader := func(id, addr string) raft.RPCHeader {
		return raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte(id), Addr: []byte(addr)}
	}
	for _, c := range []struct {
		name string
		from string
		rpcs func(t *testing.T) [][]byte
		pass int // how many of rpcs raft reads before the stream is refused (all: not refused)
	}{
		// Allowed peers whose headers name them.
		{"every RPC type from a server", "a", good, 5},

		// Peers that are not servers never reach raft.
		{"not a server", "mallory", func(t *testing.T) [][]byte {
			return [][]byte{encodeRPC(t, rpcAppendEntries, &raft.AppendEntriesRequest{RPCHeader: header("mallory"), Term: 99})}
		}, -1},
		{"not a server, with a server's header", "mallory", func(t *testing.T) [][]byte {
			return [][]byte{encodeRPC(t, rpcAppendEntries, &raft.AppendEntriesRequest{RPCHeader: header("a"), Term: 99})}
		}, -1},

		// Servers whose headers name another server or address.
		{"server claiming another server's ID", "a", func(t *testing.T) [][]byte {
			return [][]byte{encodeRPC(t, rpcAppendEntries, &raft.AppendEntriesRequest{RPCHeader: header("b"), Term: 99})}
		}, 0},
		{"server with its ID and another's address", "a", func(t *testing.T) [][]byte {
			return [][]byte{encodeRPC(t, rpcRequestVote, &raft.RequestVoteRequest{RPCHeader: withHeader("a", string(memAddr("b"))), Term: 99})}
		}, 0},
		{"server with an address that is not a server address", "a", func(t *testing.T) [][]byte {
			return [][]byte{encodeRPC(t, rpcTimeoutNow, &raft.TimeoutNowRequest{RPCHeader: withHeader("a", "mem:a")})}
		}, 0},
		// A node restarted on another port is still itself.
		{"server at another address of its own", "a", func(t *testing.T) [][]byte {
			return [][]byte{encodeRPC(t, rpcTimeoutNow, &raft.TimeoutNowRequest{RPCHeader: withHeader("a", "a@mem:elsewhere")})}
		}, 1},
		{"server with a forged legacy leader", "a", func(t *testing.T) [][]byte {
			return [][]byte{encodeRPC(t, rpcInstallSnapshot, &raft.InstallSnapshotRequest{RPCHeader: header("a"), Leader: []byte(memAddr("b")), Size: 1}), {0}}
		}, 0},
		{"server without a header (pre-v3 RPC)", "a", func(t *testing.T) [][]byte {
			return [][]byte{encodeRPC(t, rpcRequestVote, &raft.RequestVoteRequest{Term: 99, Candidate: []byte(memAddr("a"))})}
		}, 0},
		{"unknown RPC type", "a", func(t *testing.T) [][]byte { return [][]byte{{9, 0x80}} }, 0},
		{"good RPCs, then a forged one", "a", func(t *testing.T) [][]byte {
			return append(good(t), encodeRPC(t, rpcAppendEntries, &raft.AppendEntriesRequest{RPCHeader: header("b"), Term: 99}))
		}, 5},
	} {
		t.Run(c.name, func(t *testing.T) {
			n := memnet.New(1)
			defer n.Close()
			tv, _ := n.Node("v")
			tf, _ := n.Node(transport.PeerID(c.from))
			n.Node("b")
			lv, err := NewStreamLayer(tv, allowPeers("a", "b"), testLogger(t, 0))
			if err != nil {
				t.Fatal(err)
			}
			defer lv.Close()
			lf, err := NewStreamLayer(tf, allowPeers(), nil)
			if err != nil {
				t.Fatal(err)
			}
			defer lf.Close()

			rpcs := c.rpcs(t)
			accepted := make(chan net.Conn, 1)
			go func() {
				conn, _ := lv.Accept()
				accepted <- conn
			}()
			client, err := lf.Dial(memAddr("v"), time.Second)
			if err != nil {
				t.Fatal(err)
			}
			go client.Write(bytes.Join(rpcs, nil))

			if c.pass < 0 {
				// Refused at Accept: the stream is closed, raft never gets it.
				_ = client.SetReadDeadline(time.Now().Add(waitFor))
				if _, err := client.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
					t.Fatalf("read on a refused stream: %v, want io.EOF", err)
				}
				select {
				case conn := <-accepted:
					t.Fatalf("Accept returned the stream of %s (%v)", c.from, conn)
				case <-time.After(50 * time.Millisecond):
				}
				if got := lv.Refused(); got != 1 {
					t.Fatalf("Refused = %d, want 1", got)
				}
				return
			}
			server := <-accepted
			if server == nil {
				t.Fatal("Accept failed")
			}
			want := bytes.Join(rpcs[:c.pass], nil)
			got := make([]byte, len(want))
			if _, err := io.ReadFull(server, got); err != nil || !bytes.Equal(got, want) {
				t.Fatalf("raft read %q, %v; want the %d bytes of the first %d RPCs", got, err, len(want), c.pass)
			}
			if c.pass == len(rpcs) {
				if r := lv.Refused(); r != 0 {
					t.Fatalf("Refused = %d, want 0", r)
				}
				return
			}
			// The first refused RPC ends the stream: raft reads nothing of it.
			if n, err := server.Read(make([]byte, 1<<16)); n != 0 || err != io.EOF {
				t.Fatalf("read after the refused RPC: %d bytes, %v; want io.EOF", n, err)
			}
			if r := lv.Refused(); r != 1 {
				t.Fatalf("Refused = %d, want 1", r)
			}
			_ = client.SetReadDeadline(time.Now().Add(waitFor))
			if _, err := client.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
				t.Fatalf("sender's read on the refused stream: %v, want io.EOF", err)
			}
		})
	}
}

// TestStreamLayerRemovedServer: a server removed from the configuration is
// refused on the stream it already has, at its next RPC.
func TestStreamLayerRemovedServer(t *testing.T) {
	n := memnet.New(1)
	defer n.Close()
	tv, _ := n.Node("v")
	ta, _ := n.Node("a")
	var mu sync.Mutex
	servers := []string{"a"}
	peers := func(name string) bool {
		mu.Lock()
		defer mu.Unlock()
		return allowPeers(servers...)(name)
	}
	lv, err := NewStreamLayer(tv, peers, testLogger(t, 0))
	if err != nil {
		t.Fatal(err)
	}
	defer lv.Close()
	la, err := NewStreamLayer(ta, allowPeers(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer la.Close()

	accepted := make(chan net.Conn, 1)
	go func() {
		conn, _ := lv.Accept()
		accepted <- conn
	}()
	client, err := la.Dial(memAddr("v"), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	rpc := encodeRPC(t, rpcTimeoutNow, &raft.TimeoutNowRequest{RPCHeader: header("a")})
	if _, err := client.Write(rpc); err != nil {
		t.Fatal(err)
	}
	server := <-accepted
	if server == nil {
		t.Fatal("Accept failed")
	}
	if _, err := io.ReadFull(server, make([]byte, len(rpc))); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	servers = nil
	mu.Unlock()
	if _, err := client.Write(rpc); err != nil {
		t.Fatal(err)
	}
	if n, err := server.Read(make([]byte, 1024)); n != 0 || err != io.EOF {
		t.Fatalf("read after removal: %d bytes, %v; want io.EOF", n, err)
	}
	if r := lv.Refused(); r != 1 {
		t.Fatalf("Refused = %d, want 1", r)
	}
}

// dialLayer is a raft.StreamLayer that only dials, over a transport: with
// raft's own NetworkTransport on top it lets a test speak raft's real
// protocol to a server as any identity the transport has, with any header.
type dialLayer struct {
	tr     transport.Transport
	ctx    context.Context
	cancel context.CancelFunc
}

func (d *dialLayer) Accept() (net.Conn, error) {
	<-d.ctx.Done()
	return nil, transport.ErrClosed
}

func (d *dialLayer) Close() error   { d.cancel(); return nil }
func (d *dialLayer) Addr() net.Addr { return raftAddr(ServerAddress(string(d.tr.Self()), d.tr.Addr())) }

func (d *dialLayer) Dial(a raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	name, addr, err := ParseServerAddress(a)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(d.ctx, timeout)
	defer cancel()
	st, err := d.tr.Dial(ctx, transport.PeerID(name), addr, transport.ProtoRaft, transport.DialOptions{})
	if err != nil {
		return nil, err
	}
	return st, nil
}

// raftSender returns a raft NetworkTransport that sends RPCs from tr's
// identity.
func raftSender(t *testing.T, tr transport.Transport) *raft.NetworkTransport {
	d := &dialLayer{tr: tr}
	d.ctx, d.cancel = context.WithCancel(context.Background())
	nt := raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
		Stream:  d,
		MaxPool: 1,
		Timeout: 2 * time.Second,
		Logger:  newSlogHclog(testLogger(t, 0), "sender"),
	})
	t.Cleanup(func() { _ = nt.Close() })
	return nt
}

// TestRaftTakeoverRefused reproduces issue 12's Raft takeover: a peer with
// a certificate of the cluster CA but not a server of the Raft
// configuration ("mallory") speaks raft's protocol to the servers, as a
// leader with a far higher term whose entries add it as a member and change
// a setting, as a candidate, and as the real leader; a server of the
// configuration forges another server's header. Every attempt is refused
// and counted, and the leader, the terms, the members, the settings and the
// configuration stay as they were. A fresh server with no configuration
// refuses mallory too, and a server that joins later through the leader
// still takes part in Raft.
func TestRaftTakeoverRefused(t *testing.T) {
	tc := newTestCluster(t, testConfig())
	tc.bootstrap("n1", "n2", "n3")
	l := tc.leader()
	tc.waitEpoch("n1", "n2", "n3")
	if err := l.c.Apply(ctxTimeout(t, waitFor), SetSetting{Key: "lr", Value: "3e-4"}); err != nil {
		t.Fatal(err)
	}
	tc.waitSetting("lr", "3e-4")
	var f, other *testNode // two followers
	for _, n := range tc.up() {
		switch {
		case n == l:
		case f == nil:
			f = n
		default:
			other = n
		}
	}
	trMallory, err := tc.net.Node("mallory")
	if err != nil {
		t.Fatal(err)
	}
	mallory := raftSender(t, trMallory)
	insider := raftSender(t, other.tr) // a server of the configuration, forging headers

	term := l.c.Status().Term
	attackTerm := term + 1000
	// takeover is an AppendEntries that the server to would follow as is
	// without the check: a higher term, its own last entry as the previous
	// one, and two entries to commit at once.
	takeover := func(to *testNode, hdr raft.RPCHeader) *raft.AppendEntriesRequest {
		last := to.c.raft.LastIndex()
		lastTerm, err := strconv.ParseUint(to.c.raft.Stats()["last_log_term"], 10, 64)
		if err != nil {
			t.Fatal(err)
		}
		join, _ := EncodeCommand(JoinMember{Name: "mallory", Addr: "mem:mallory"})
		set, _ := EncodeCommand(SetSetting{Key: "lr", Value: "666"})
		return &raft.AppendEntriesRequest{
			RPCHeader: hdr, Term: attackTerm, Leader: hdr.Addr,
			PrevLogEntry: last, PrevLogTerm: lastTerm,
			Entries: []*raft.Log{
				{Index: last + 1, Term: attackTerm, Type: raft.LogCommand, Data: join},
				{Index: last + 2, Term: attackTerm, Type: raft.LogCommand, Data: set},
			},
			LeaderCommitIndex: last + 2,
		}
	}
	vote := func(hdr raft.RPCHeader) *raft.RequestVoteRequest {
		return &raft.RequestVoteRequest{RPCHeader: hdr, Term: attackTerm, LastLogIndex: 1 << 40, LastLogTerm: attackTerm, LeadershipTransfer: true}
	}
	appendTo := func(from *raft.NetworkTransport, to *testNode, req *raft.AppendEntriesRequest) error {
		return from.AppendEntries(raft.ServerID(to.name), memAddr(to.name), req, &raft.AppendEntriesResponse{})
	}
	voteOf := func(from *raft.NetworkTransport, to *testNode, req *raft.RequestVoteRequest) error {
		return from.RequestVote(raft.ServerID(to.name), memAddr(to.name), req, &raft.RequestVoteResponse{})
	}

	for _, a := range []struct {
		name string
		to   *testNode
		send func() error
	}{
		// A certificate that is not a server of the configuration.
		{"non-member leads a follower", f, func() error { return appendTo(mallory, f, takeover(f, header("mallory"))) }},
		{"non-member poses as the leader", f, func() error { return appendTo(mallory, f, takeover(f, header(l.name))) }},
		{"non-member campaigns as a voter", l, func() error { return voteOf(mallory, l, vote(header(f.name))) }},
		{"non-member pre-votes as a voter", l, func() error {
			return mallory.RequestPreVote(raft.ServerID(l.name), memAddr(l.name),
				&raft.RequestPreVoteRequest{RPCHeader: header(f.name), Term: attackTerm, LastLogIndex: 1 << 40, LastLogTerm: attackTerm}, &raft.RequestPreVoteResponse{})
		}},
		{"non-member tells a follower to campaign", f, func() error {
			return mallory.TimeoutNow(raft.ServerID(f.name), memAddr(f.name), &raft.TimeoutNowRequest{RPCHeader: header(l.name)}, &raft.TimeoutNowResponse{})
		}},
		// A server of the configuration whose header names another.
		{"member poses as the leader", f, func() error { return appendTo(insider, f, takeover(f, header(l.name))) }},
		{"member campaigns as another voter", l, func() error { return voteOf(insider, l, vote(header(f.name))) }},
	} {
		before := a.to.c.RefusedRaftStreams()
		if err := a.send(); err == nil {
			t.Errorf("%s: %s answered", a.name, a.to.name)
		}
		if got := a.to.c.RefusedRaftStreams(); got != before+1 {
			t.Errorf("%s: %s refused %d streams, want %d", a.name, a.to.name, got-before, 1)
		}
	}

	// Give any effect of the attempts time to show: several election
	// timeouts, and heartbeats from the real leader.
	time.Sleep(10 * testConfig().ElectionTimeout)
	if got := tc.leader(); got != l {
		t.Errorf("leader is %s, was %s", got.name, l.name)
	}
	for _, n := range tc.up() {
		st := n.c.Status()
		if st.Term != term {
			t.Errorf("%s: term %d, was %d (attacks used %d)", n.name, st.Term, term, attackTerm)
		}
		if m, ok := n.c.State().Member("mallory"); ok {
			t.Errorf("%s: mallory is a member: %+v", n.name, m)
		}
		if v := n.c.State().Settings["lr"]; v != "3e-4" {
			t.Errorf("%s: lr = %q, want 3e-4", n.name, v)
		}
	}
	tc.waitServers(l, []string{"n1", "n2", "n3"}, nil)

	// A fresh server, with no configuration yet, hears only members the
	// node layer reported: mallory is not one.
	n4 := tc.start("n4")
	if err := appendTo(mallory, n4, takeover(n4, header("mallory"))); err == nil {
		t.Error("fresh n4 answered mallory")
	}
	if got := n4.c.RefusedRaftStreams(); got != 1 {
		t.Errorf("fresh n4 refused %d streams, want 1", got)
	}
	if st := n4.c.Status(); st.Term != 0 || st.Leader != "" || st.LastIndex != 0 {
		t.Errorf("fresh n4 after mallory's AppendEntries: %+v", st)
	}

	// A server that joins later, added by the leader, takes part in Raft.
	tc.gossipJoins()
	tc.waitEpoch("n1", "n2", "n3", "n4")
	tc.waitServers(tc.leader(), []string{"n1", "n2", "n3", "n4"}, nil)
	tc.waitSetting("lr", "3e-4")
	if err := appendTo(mallory, n4, takeover(n4, header("mallory"))); err == nil {
		t.Error("n4 answered mallory once in the configuration")
	}
}

// TestServerThatFellBehindHearsANewLeader: a server that was down while the
// whole configuration changed under it (its log names only servers that
// have since gone) still hears the leader it has never seen in its log, a
// member gossip reports alive, and catches up. A guard that admitted only
// the servers of the latest configuration in the log would refuse that
// leader for good.
func TestServerThatFellBehindHearsANewLeader(t *testing.T) {
	tc := newTestCluster(t, testConfig())
	tc.bootstrap("n1", "n2", "n3")
	tc.leader()
	tc.waitEpoch("n1", "n2", "n3")
	tc.kill("n3")
	tc.gossipFailed("n3")
	tc.waitEpoch("n1", "n2")
	tc.start("n4")
	tc.start("n5")
	tc.gossipJoins()
	tc.waitEpoch("n1", "n2", "n4", "n5")
	// Down to n4 and n5 one server at a time, each removal committed
	// before the next kill, so that a quorum remains.
	// Every server, not only the leader, must hold the smaller
	// configuration before the next kill: a follower still on the larger
	// one cannot make a quorum of it.
	tc.kill("n1")
	tc.gossipFailed("n1")
	for _, n := range tc.up() {
		tc.waitServers(n, []string{"n2", "n4", "n5"}, nil)
	}
	tc.kill("n2")
	tc.gossipFailed("n2")
	for _, n := range tc.up() {
		tc.waitServers(n, []string{"n4", "n5"}, nil)
	}
	tc.waitEpoch("n4", "n5")
	l := tc.leader()
	if err := l.c.Apply(ctxTimeout(t, waitFor), SetSetting{Key: "after", Value: "n3 left"}); err != nil {
		t.Fatal(err)
	}

	n3 := tc.start("n3")
	if conf := n3.c.Status().Servers; len(conf) != 3 {
		t.Fatalf("n3 restarted with servers %+v, want its old three", conf)
	}
	tc.gossipJoins()
	tc.waitEpoch("n3", "n4", "n5")
	tc.waitSetting("after", "n3 left")
	if r := n3.c.RefusedRaftStreams(); r != 0 {
		t.Errorf("n3 refused %d raft streams", r)
	}
}

// bytesStream is a transport.Stream from peer that reads r and writes
// nowhere.
type bytesStream struct {
	net.Conn // nil: only Read, Close and Peer are used
	r        io.Reader
	peer     string
}

func (b *bytesStream) Read(p []byte) (int, error)   { return b.r.Read(p) }
func (b *bytesStream) Close() error                 { return nil }
func (b *bytesStream) Peer() transport.PeerID       { return transport.PeerID(b.peer) }
func (b *bytesStream) Protocol() transport.Protocol { return transport.ProtoRaft }
func (b *bytesStream) CloseWrite() error            { return nil }

// FuzzGuardedConn: whatever bytes an admitted peer sends, the guard does
// not panic, and what it hands raft is a prefix of them, unchanged.
func FuzzGuardedConn(f *testing.F) {
	f.Add(encodeRPC(f, rpcAppendEntries, &raft.AppendEntriesRequest{RPCHeader: header("a"), Term: 3, Leader: []byte(memAddr("a")),
		Entries: []*raft.Log{{Index: 8, Term: 3, Type: raft.LogCommand, Data: []byte("x")}}}))
	f.Add(append(encodeRPC(f, rpcInstallSnapshot, &raft.InstallSnapshotRequest{RPCHeader: header("a"), Size: 3}), 1, 2, 3, rpcTimeoutNow))
	f.Add(encodeRPC(f, rpcRequestVote, &raft.RequestVoteRequest{RPCHeader: header("b"), Term: 4}))
	f.Add([]byte{rpcRequestPreVote, 0x81, 0xa1, 'x', 0xc1})
	f.Fuzz(func(t *testing.T, in []byte) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		s := &StreamLayer{peers: allowPeers("a"), ctx: ctx, cancel: cancel, refusal: refusalLog{log: discardLogger},
			streams: make(map[*trackedStream]struct{})}
		g := newGuardedConn(&trackedStream{Stream: &bytesStream{r: bytes.NewReader(in), peer: "a"}, owner: s}, "a")
		out, _ := io.ReadAll(io.LimitReader(g, int64(len(in))+1))
		if !bytes.HasPrefix(in, out) {
			t.Fatalf("raft read %d bytes that are not a prefix of the %d sent", len(out), len(in))
		}
	})
}
