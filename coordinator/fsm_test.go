package coordinator

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"

	"github.com/hashicorp/raft"
)

// applyCmd encodes cmd and applies it as a committed log entry, as raft
// would. It returns the FSM's result.
func applyCmd(t testing.TB, f *fsm, cmd Command) error {
	t.Helper()
	b, err := EncodeCommand(cmd)
	if err != nil {
		t.Fatalf("encode %T: %v", cmd, err)
	}
	return applyRaw(f, b)
}

func applyRaw(f *fsm, b []byte) error {
	res := f.Apply(&raft.Log{Type: raft.LogCommand, Data: b})
	if res == nil {
		return nil
	}
	err, ok := res.(error)
	if !ok {
		panic(fmt.Sprintf("Apply returned %T, want error or nil", res))
	}
	return err
}

func stateBytes(t testing.TB, f *fsm) []byte {
	t.Helper()
	b, err := encodeState(f.state())
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// validCommands is one of each command type.
func validCommands() []Command {
	return []Command{
		JoinMember{Name: "n1", Addr: "10.0.0.1:7000", Meta: map[string]string{"gpu": "h100", "zone": "a"}},
		JoinMember{Name: "n2", Addr: "mem:n2"},
		LeaveMember{Name: "n1"},
		FailMember{Name: "n2"},
		CommitEpoch{ID: 3, Members: []string{"n2", "n1"}, StartStep: 100},
		SetSetting{Key: "job/lr", Value: "3e-4"},
		SetSetting{Key: "empty", Value: ""},
		DeleteSetting{Key: "job/lr"},
		RegisterDataset{Dataset: testDataset("legal", false)},
		PlaceDataset{ID: hexHash('d'), Version: 1, Placement: map[string][]string{hexHash('1'): {"n1", "n2"}}},
		DeleteDataset{ID: hexHash('d')},
		SubmitJob{ID: "job-1", Spec: testJobSpec(), SubmittedBy: "n1"},
		SetJobState{ID: "job-1", State: JobFailed, Error: "n3's weights differ", From: []JobState{JobRunning}},
		RecordCheckpoint{ID: "job-1", Checkpoint: testCheckpoint(20)},
		RecordJobEpoch{ID: "job-1", Epoch: JobEpoch{Epoch: 3, Members: []string{"n2", "n1"}, FirstStep: 21, At: 1767225600000}},
		RevokeCert{Serial: "5a1f00c3", Name: "n2", At: 1767225600},
		ResumeJob{ID: "job-1"},
		DeleteJob{ID: "job-1", Force: true},
		RemoveMember{Name: "n2"},
	}
}

func TestCommandRoundTrip(t *testing.T) {
	for _, cmd := range validCommands() {
		b, err := EncodeCommand(cmd)
		if err != nil {
			t.Fatalf("%#v: %v", cmd, err)
		}
		got, err := DecodeCommand(b)
		if err != nil {
			t.Fatalf("%s: %v", b, err)
		}
		if !reflect.DeepEqual(got, cmd) {
			t.Errorf("round trip of %s:\n got %#v\nwant %#v", b, got, cmd)
		}
	}
	// The wire form is the documented envelope.
	b, _ := EncodeCommand(SetSetting{Key: "k", Value: "v"})
	if want := `{"v":1,"t":"setting.set","p":{"key":"k","value":"v"}}`; string(b) != want {
		t.Errorf("envelope %s, want %s", b, want)
	}
}

func TestDecodeCommandRejects(t *testing.T) {
	long := func(n int) string { return strings.Repeat("x", n) }
	env := func(t, p string) string { return `{"v":1,"t":"` + t + `","p":` + p + `}` }
	manyMeta := func(n int) string {
		var parts []string
		for i := range n {
			parts = append(parts, fmt.Sprintf(`"k%d":"v"`, i))
		}
		return "{" + strings.Join(parts, ",") + "}"
	}
	for _, c := range []struct {
		name, in string
	}{
		// The envelope.
		{"empty", ``},
		{"not json", `hello`},
		{"array", `[1,2]`},
		{"trailing data", env("setting.delete", `{"key":"k"}`) + ` {}`},
		{"unknown envelope field", `{"v":1,"t":"setting.delete","p":{"key":"k"},"x":1}`},
		{"version 0", `{"v":0,"t":"setting.delete","p":{"key":"k"}}`},
		{"missing version", `{"t":"setting.delete","p":{"key":"k"}}`},
		{"future version", `{"v":2,"t":"setting.delete","p":{"key":"k"}}`},
		{"negative version", `{"v":-1,"t":"setting.delete","p":{"key":"k"}}`},
		{"unknown type", env("job.launch", `{}`)},
		{"missing payload", `{"v":1,"t":"setting.delete"}`},
		{"null payload", env("setting.delete", `null`)},
		{"too large", env("setting.set", `{"key":"k","value":"`+long(MaxCommandSize)+`"}`)},
		// Payloads.
		{"unknown payload field", env("setting.delete", `{"key":"k","extra":true}`)},
		{"payload of wrong type", env("setting.delete", `"k"`)},
		{"join: no name", env("member.join", `{"addr":"a:1"}`)},
		{"join: name with space", env("member.join", `{"name":"n 1","addr":"a:1"}`)},
		{"join: name with control", env("member.join", `{"name":"n\u0000","addr":"a:1"}`)},
		{"join: name too long", env("member.join", `{"name":"`+long(MaxNameLen+1)+`","addr":"a:1"}`)},
		{"join: no addr", env("member.join", `{"name":"n1"}`)},
		{"join: addr with @", env("member.join", `{"name":"n1","addr":"x@a:1"}`)},
		{"join: addr too long", env("member.join", `{"name":"n1","addr":"`+long(MaxAddrLen+1)+`"}`)},
		{"join: meta key bad", env("member.join", `{"name":"n1","addr":"a:1","meta":{"a b":"v"}}`)},
		{"join: meta key empty", env("member.join", `{"name":"n1","addr":"a:1","meta":{"":"v"}}`)},
		{"join: meta value too long", env("member.join", `{"name":"n1","addr":"a:1","meta":{"k":"`+long(MaxMetaValueLen+1)+`"}}`)},
		{"join: too much meta", env("member.join", `{"name":"n1","addr":"a:1","meta":`+manyMeta(MaxMetaEntries+1)+`}`)},
		{"leave: no name", env("member.leave", `{}`)},
		{"fail: bad name", env("member.fail", `{"name":""}`)},
		{"epoch: id 0", env("epoch.commit", `{"id":0,"members":["n1"]}`)},
		{"epoch: negative id", env("epoch.commit", `{"id":-1,"members":["n1"]}`)},
		{"epoch: fractional step", env("epoch.commit", `{"id":1,"members":["n1"],"start_step":1.5}`)},
		{"epoch: no members", env("epoch.commit", `{"id":1,"members":[]}`)},
		{"epoch: null members", env("epoch.commit", `{"id":1}`)},
		{"epoch: duplicate member", env("epoch.commit", `{"id":1,"members":["n1","n2","n1"]}`)},
		{"epoch: bad member", env("epoch.commit", `{"id":1,"members":["n1",""]}`)},
		{"set: bad key", env("setting.set", `{"key":"a=b","value":"v"}`)},
		{"set: key too long", env("setting.set", `{"key":"`+long(MaxKeyLen+1)+`","value":"v"}`)},
		{"set: value too long", env("setting.set", `{"key":"k","value":"`+long(MaxSettingValueLen+1)+`"}`)},
		{"delete: no key", env("setting.delete", `{}`)},
	} {
		t.Run(c.name, func(t *testing.T) {
			cmd, err := DecodeCommand([]byte(c.in))
			if !errors.Is(err, ErrInvalidCommand) {
				t.Fatalf("DecodeCommand = %#v, %v; want ErrInvalidCommand", cmd, err)
			}
			// The FSM turns the same input into an error result.
			if err := applyRaw(newFSM(), []byte(c.in)); !errors.Is(err, ErrInvalidCommand) {
				t.Fatalf("Apply = %v, want ErrInvalidCommand", err)
			}
		})
	}
	// The encoder refuses what the decoder would.
	if _, err := EncodeCommand(CommitEpoch{ID: 1}); !errors.Is(err, ErrInvalidCommand) {
		t.Errorf("EncodeCommand(empty epoch) = %v", err)
	}
	if _, err := EncodeCommand(nil); !errors.Is(err, ErrInvalidCommand) {
		t.Errorf("EncodeCommand(nil) = %v", err)
	}
}

// TestFSMCommands applies each command in a scenario and checks the state
// and the errors of commands that do not apply.
func TestFSMCommands(t *testing.T) {
	f := newFSM()
	mustApply := func(cmd Command) {
		t.Helper()
		if err := applyCmd(t, f, cmd); err != nil {
			t.Fatalf("%#v: %v", cmd, err)
		}
	}
	// rejects applies cmd, wants err, and checks the state did not change.
	rejects := func(cmd Command, want error) {
		t.Helper()
		before := stateBytes(t, f)
		if err := applyCmd(t, f, cmd); !errors.Is(err, want) {
			t.Fatalf("%#v: got %v, want %v", cmd, err, want)
		}
		if after := stateBytes(t, f); !bytes.Equal(before, after) {
			t.Fatalf("%#v was rejected but changed the state:\n%s\n%s", cmd, before, after)
		}
	}

	// Members.
	mustApply(JoinMember{Name: "n1", Addr: "a:1", Meta: map[string]string{"gpu": "h100"}})
	mustApply(JoinMember{Name: "n2", Addr: "a:2"})
	mustApply(JoinMember{Name: "n3", Addr: "a:3"})
	st := f.state()
	if got := st.Alive(); !reflect.DeepEqual(got, []string{"n1", "n2", "n3"}) {
		t.Fatalf("alive %v", got)
	}
	if m, _ := st.Member("n1"); m.Meta["gpu"] != "h100" || m.Addr != "a:1" || m.State != MemberAlive {
		t.Fatalf("n1 = %+v", m)
	}
	rejects(LeaveMember{Name: "n9"}, ErrUnknownMember)
	rejects(FailMember{Name: "n9"}, ErrUnknownMember)

	// Epochs: IDs count up by one, members must be known and alive, the
	// start step never goes back.
	rejects(CommitEpoch{ID: 2, Members: []string{"n1"}}, ErrStaleEpoch)
	rejects(CommitEpoch{ID: 1, Members: []string{"n1", "n9"}}, ErrUnknownMember)
	mustApply(CommitEpoch{ID: 1, Members: []string{"n3", "n1", "n2"}, StartStep: 10})
	if e := f.state().Epoch; !reflect.DeepEqual(e, Epoch{ID: 1, Members: []string{"n3", "n1", "n2"}, StartStep: 10}) {
		t.Fatalf("epoch %+v", e)
	}
	rejects(CommitEpoch{ID: 1, Members: []string{"n1"}, StartStep: 10}, ErrStaleEpoch)
	rejects(CommitEpoch{ID: 2, Members: []string{"n1"}, StartStep: 9}, ErrStaleEpoch)
	mustApply(FailMember{Name: "n2"})
	rejects(CommitEpoch{ID: 2, Members: []string{"n1", "n2"}, StartStep: 10}, ErrMemberNotAlive)
	mustApply(LeaveMember{Name: "n3"})
	if m, _ := f.state().Member("n3"); m.State != MemberLeft {
		t.Fatalf("n3 = %+v", m)
	}
	// The epoch stays as committed until a new one.
	if e := f.state().Epoch; e.ID != 1 || len(e.Members) != 3 {
		t.Fatalf("epoch changed by a member command: %+v", e)
	}
	mustApply(CommitEpoch{ID: 2, Members: []string{"n1"}, StartStep: 10})
	// A failed member comes back by joining again, with a new address.
	mustApply(JoinMember{Name: "n2", Addr: "b:2"})
	if m, _ := f.state().Member("n2"); m.State != MemberAlive || m.Addr != "b:2" {
		t.Fatalf("n2 = %+v", m)
	}
	mustApply(CommitEpoch{ID: 3, Members: []string{"n1", "n2"}, StartStep: 20})

	// Settings.
	mustApply(SetSetting{Key: "lr", Value: "1e-3"})
	mustApply(SetSetting{Key: "lr", Value: "2e-3"})
	mustApply(DeleteSetting{Key: "absent"})
	if s := f.state().Settings; !reflect.DeepEqual(s, map[string]string{"lr": "2e-3"}) {
		t.Fatalf("settings %v", s)
	}
	mustApply(DeleteSetting{Key: "lr"})
	if s := f.state().Settings; len(s) != 0 {
		t.Fatalf("settings %v", s)
	}

	// Limits.
	for i := range MaxSettings {
		mustApply(SetSetting{Key: fmt.Sprint("k", i), Value: "v"})
	}
	rejects(SetSetting{Key: "one-more", Value: "v"}, ErrLimit)
	mustApply(SetSetting{Key: "k0", Value: "replacing is fine"})
	for i := len(f.state().Members); i < MaxMembers; i++ {
		mustApply(JoinMember{Name: fmt.Sprint("m", i), Addr: "a:1"})
	}
	rejects(JoinMember{Name: "one-more", Addr: "a:1"}, ErrLimit)
	mustApply(JoinMember{Name: "n3", Addr: "a:3"}) // a known member may rejoin

	// Entries that are not commands leave the state alone.
	before := stateBytes(t, f)
	for _, typ := range []raft.LogType{raft.LogNoop, raft.LogBarrier, raft.LogConfiguration} {
		if res := f.Apply(&raft.Log{Type: typ, Data: []byte("junk")}); res != nil {
			t.Errorf("Apply(%v) = %v", typ, res)
		}
	}
	if !bytes.Equal(before, stateBytes(t, f)) {
		t.Error("a non-command entry changed the state")
	}
}

// TestStateIsACopy: what State returns does not alias the FSM.
func TestStateIsACopy(t *testing.T) {
	f := newFSM()
	applyCmd(t, f, JoinMember{Name: "n1", Addr: "a:1", Meta: map[string]string{"k": "v"}})
	applyCmd(t, f, CommitEpoch{ID: 1, Members: []string{"n1"}})
	applyCmd(t, f, SetSetting{Key: "k", Value: "v"})
	st := f.state()
	st.Members[0].Meta["k"] = "changed"
	st.Epoch.Members[0] = "changed"
	st.Settings["k"] = "changed"
	again := f.state()
	if again.Members[0].Meta["k"] != "v" || again.Epoch.Members[0] != "n1" || again.Settings["k"] != "v" {
		t.Fatalf("state aliased: %+v", again)
	}
}

// randomCommands returns n commands, valid and invalid, from seed.
func randomCommands(seed uint64, n int) [][]byte {
	rng := rand.New(rand.NewPCG(seed, 1))
	name := func() string { return fmt.Sprint("n", rng.IntN(8)) }
	var out [][]byte
	var epoch uint64
	for range n {
		var cmd Command
		switch rng.IntN(8) {
		case 0, 1:
			cmd = JoinMember{Name: name(), Addr: fmt.Sprint("h:", rng.IntN(3)), Meta: map[string]string{"r": fmt.Sprint(rng.IntN(2))}}
		case 2:
			cmd = LeaveMember{Name: name()}
		case 3:
			cmd = FailMember{Name: name()}
		case 4:
			members := []string{}
			for _, i := range rng.Perm(8)[:1+rng.IntN(4)] {
				members = append(members, fmt.Sprint("n", i))
			}
			epoch += uint64(rng.IntN(2)) // sometimes stale
			cmd = CommitEpoch{ID: epoch + 1, Members: members, StartStep: uint64(rng.IntN(5))}
		case 5:
			cmd = SetSetting{Key: fmt.Sprint("k", rng.IntN(4)), Value: fmt.Sprint(rng.IntN(100))}
		case 6:
			cmd = DeleteSetting{Key: fmt.Sprint("k", rng.IntN(4))}
		case 7:
			cmd = RevokeCert{Serial: fmt.Sprintf("%x", 1+rng.IntN(6)), Name: name(), At: 1 + int64(rng.IntN(1000))}
		}
		b, err := EncodeCommand(cmd)
		if err != nil {
			panic(err)
		}
		if rng.IntN(10) == 0 { // a corrupt entry
			b = b[:rng.IntN(len(b))]
		}
		out = append(out, b)
	}
	return out
}

// TestFSMDeterminism: Apply must be deterministic. The same log gives the
// same state bytes and the same results on independent FSMs, and a server
// that restores a snapshot taken part way and applies the rest ends in the
// same state.
func TestFSMDeterminism(t *testing.T) {
	for seed := range uint64(20) {
		log := randomCommands(seed, 200)
		a, b := newFSM(), newFSM()
		var mid *fsm
		for i, entry := range log {
			ea, eb := applyRaw(a, entry), applyRaw(b, entry)
			if fmt.Sprint(ea) != fmt.Sprint(eb) {
				t.Fatalf("seed %d entry %d: results differ: %v / %v", seed, i, ea, eb)
			}
			if mid != nil {
				applyRaw(mid, entry)
			}
			if i == 100 {
				mid = newFSM()
				snap := snapshotBytes(t, a)
				if err := mid.Restore(io.NopCloser(bytes.NewReader(snap))); err != nil {
					t.Fatalf("seed %d: restore: %v", seed, err)
				}
			}
		}
		sa, sb, sm := stateBytes(t, a), stateBytes(t, b), stateBytes(t, mid)
		if !bytes.Equal(sa, sb) || !bytes.Equal(sa, sm) {
			t.Fatalf("seed %d: states differ:\n%s\n%s\n%s", seed, sa, sb, sm)
		}
	}
}

// snapshotBytes persists f's snapshot the way raft does and returns it.
func snapshotBytes(t testing.TB, f *fsm) []byte {
	t.Helper()
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	defer snap.Release()
	sink := &memSink{}
	if err := snap.Persist(sink); err != nil {
		t.Fatal(err)
	}
	return sink.Bytes()
}

type memSink struct{ bytes.Buffer }

func (*memSink) ID() string    { return "mem" }
func (*memSink) Cancel() error { return nil }
func (*memSink) Close() error  { return nil }

func TestSnapshotRoundTrip(t *testing.T) {
	f := newFSM()
	for _, cmd := range []Command{
		JoinMember{Name: "n1", Addr: "a:1", Meta: map[string]string{"gpu": "h100"}},
		JoinMember{Name: "n2", Addr: "a:2"},
		JoinMember{Name: "n3", Addr: "a:3"},
		CommitEpoch{ID: 1, Members: []string{"n2", "n1", "n3"}, StartStep: 7},
		FailMember{Name: "n3"},
		SetSetting{Key: "lr", Value: "1e-3"},
		RegisterDataset{Dataset: testDataset("legal", false)},
		PlaceDataset{ID: hexHash('d'), Version: 1, Placement: map[string][]string{hexHash('1'): {"n1", "n2"}, hexHash('2'): {"n2", "n3"}}},
	} {
		if err := applyCmd(t, f, cmd); err != nil {
			t.Fatal(err)
		}
	}
	snap := snapshotBytes(t, f)
	g := newFSM()
	applyCmd(t, g, SetSetting{Key: "stale", Value: "replaced by the restore"})
	_, changed := g.watch()
	if err := g.Restore(io.NopCloser(bytes.NewReader(snap))); err != nil {
		t.Fatal(err)
	}
	select {
	case <-changed:
	default:
		t.Error("Restore did not signal a change")
	}
	if !reflect.DeepEqual(f.state(), g.state()) {
		t.Fatalf("restored state differs:\n%+v\n%+v", f.state(), g.state())
	}
	if !bytes.Equal(snap, snapshotBytes(t, g)) {
		t.Fatal("snapshot of the restored state differs")
	}
	// An empty FSM round-trips too.
	e := newFSM()
	if err := e.Restore(io.NopCloser(bytes.NewReader(snapshotBytes(t, newFSM())))); err != nil {
		t.Fatal(err)
	}
}

func TestRestoreRejects(t *testing.T) {
	member := `{"name":"n1","addr":"a:1","state":"alive"}`
	doc := func(members, epoch, settings string) string {
		return `{"version":1,"state":{"members":[` + members + `],"epoch":` + epoch + `,"settings":` + settings + `}}`
	}
	ok := doc(member, `{"id":1,"members":["n1"],"start_step":0}`, `{"k":"v"}`)
	if _, err := decodeState([]byte(ok)); err != nil {
		t.Fatalf("valid snapshot: %v", err)
	}
	for _, c := range []struct{ name, in string }{
		{"empty", ``},
		{"not json", `nope`},
		{"trailing", ok + `{}`},
		{"version", strings.Replace(ok, `"version":1`, `"version":2`, 1)},
		{"unknown field", strings.Replace(ok, `"version":1`, `"version":1,"x":0`, 1)},
		{"bad member name", doc(`{"name":"","addr":"a:1","state":"alive"}`, `{}`, `{}`)},
		{"bad member state", doc(`{"name":"n1","addr":"a:1","state":"zombie"}`, `{}`, `{}`)},
		{"duplicate member", doc(member+","+member, `{}`, `{}`)},
		{"epoch names unknown member", doc(member, `{"id":1,"members":["n2"]}`, `{}`)},
		{"epoch with id 0 and members", doc(member, `{"id":0,"members":["n1"]}`, `{}`)},
		{"epoch with duplicate", doc(member, `{"id":1,"members":["n1","n1"]}`, `{}`)},
		{"bad setting key", doc(member, `{}`, `{"a b":"v"}`)},
		{"too big", ok + strings.Repeat(" ", 1<<10)}, // the limit is lowered below
	} {
		t.Run(c.name, func(t *testing.T) {
			f := newFSM()
			f.maxSnapshot = 1 << 10
			applyCmd(t, f, SetSetting{Key: "keep", Value: "me"})
			before := stateBytes(t, f)
			if err := f.Restore(io.NopCloser(strings.NewReader(c.in))); !errors.Is(err, ErrInvalidSnapshot) {
				t.Fatalf("Restore = %v, want ErrInvalidSnapshot", err)
			}
			if !bytes.Equal(before, stateBytes(t, f)) {
				t.Fatal("a rejected snapshot changed the state")
			}
		})
	}
}

func TestNextRing(t *testing.T) {
	for _, c := range []struct{ prev, alive, want []string }{
		{nil, []string{"b", "a"}, []string{"a", "b"}},
		{[]string{"c", "a", "b"}, []string{"a", "b", "c"}, []string{"c", "a", "b"}},
		{[]string{"c", "a", "b"}, []string{"a", "c"}, []string{"c", "a"}},
		{[]string{"c", "a"}, []string{"a", "b", "c", "d"}, []string{"c", "a", "b", "d"}},
		{[]string{"a"}, nil, []string{}},
	} {
		if got := nextRing(c.prev, c.alive); !reflect.DeepEqual(got, c.want) {
			t.Errorf("nextRing(%v, %v) = %v, want %v", c.prev, c.alive, got, c.want)
		}
	}
}

// FuzzDecodeCommand: the decoder never panics, and whatever it accepts
// re-encodes to something it decodes to the same command.
func FuzzDecodeCommand(f *testing.F) {
	for _, cmd := range validCommands() {
		b, _ := EncodeCommand(cmd)
		f.Add(b)
	}
	f.Add([]byte(`{"v":1,"t":"member.join","p":{"name":"n","addr":"a","meta":{}}}`))
	f.Add([]byte(`{"v":1,"t":"epoch.commit","p":{"id":1,"members":["a","a"]}}`))
	f.Add([]byte(`{"V":1,"T":"setting.set","P":{"KEY":"k","value":"\ud800"}}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, b []byte) {
		cmd, err := DecodeCommand(b)
		if err != nil {
			if !errors.Is(err, ErrInvalidCommand) {
				t.Fatalf("error %v does not wrap ErrInvalidCommand", err)
			}
			return
		}
		again, err := EncodeCommand(cmd)
		if err != nil {
			t.Fatalf("accepted %q but cannot re-encode %#v: %v", b, cmd, err)
		}
		cmd2, err := DecodeCommand(again)
		if err != nil {
			t.Fatalf("re-encoded %q does not decode: %v", again, err)
		}
		if !reflect.DeepEqual(cmd, cmd2) {
			t.Fatalf("round trip changed %#v into %#v", cmd, cmd2)
		}
	})
}

// FuzzApply: applying any sequence of entries (the input split at NUL
// bytes) never panics, every result is nil or an error, and the state
// always satisfies the invariants Restore checks.
func FuzzApply(f *testing.F) {
	var seed [][]byte
	for _, cmd := range validCommands() {
		b, _ := EncodeCommand(cmd)
		seed = append(seed, b)
	}
	f.Add(bytes.Join(seed, []byte{0}))
	f.Add(bytes.Join(randomCommands(1, 20), []byte{0}))
	f.Add([]byte("{}\x00"))
	f.Fuzz(func(t *testing.T, in []byte) {
		fs := newFSM()
		for _, entry := range bytes.Split(in, []byte{0}) {
			_ = applyRaw(fs, entry) // panics on a non-error result
			b := stateBytes(t, fs)
			if _, err := decodeState(b); err != nil {
				t.Fatalf("after %q the state breaks an invariant: %v\n%s", entry, err, b)
			}
		}
	})
}

// FuzzRestore: the snapshot decoder never panics, and a snapshot it
// accepts re-encodes to one it accepts with the same state.
func FuzzRestore(f *testing.F) {
	g := newFSM()
	for _, b := range randomCommands(3, 50) {
		applyRaw(g, b)
	}
	b, _ := encodeState(g.state())
	f.Add(b)
	f.Add([]byte(`{"version":1,"state":{"members":[],"epoch":{"id":0,"members":null,"start_step":0},"settings":{}}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := decodeState(b)
		if err != nil {
			if !errors.Is(err, ErrInvalidSnapshot) {
				t.Fatalf("error %v does not wrap ErrInvalidSnapshot", err)
			}
			return
		}
		again, err := encodeState(s.export())
		if err != nil {
			t.Fatal(err)
		}
		s2, err := decodeState(again)
		if err != nil {
			t.Fatalf("re-encoded snapshot rejected: %v", err)
		}
		if !reflect.DeepEqual(s.export(), s2.export()) {
			t.Fatal("snapshot round trip changed the state")
		}
	})
}
