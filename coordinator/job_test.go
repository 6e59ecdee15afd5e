package coordinator

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"reflect"
	"testing"
)

func testJobSpec() JobSpec {
	return JobSpec{Base: ModelRef{Config: hexHash('a'), Weights: hexHash('b')}, Dataset: hexHash('d'),
		Steps: 100, GlobalBatch: 16, MicroBatch: 8, LR: 1e-3, MinLRFrac: 0.1, Warmup: 10, WeightDecay: 0.1, Clip: 1,
		Seed: 1, CheckpointEvery: 20, EvalEvery: 20, HashEvery: 10, Replicas: 2}
}

func testCheckpoint(step int) Checkpoint {
	return Checkpoint{Step: step, Config: hexHash('a'), Weights: hexHash('c'), State: hexHash('e'), Hash: hexHash('f'), Holders: []string{"n1", "n2"}}
}

func TestJobLifecycle(t *testing.T) {
	f := newFSM()
	if err := applyCmd(t, f, SubmitJob{ID: "j1", Spec: testJobSpec(), SubmittedBy: "n1"}); !errors.Is(err, ErrUnknownDataset) {
		t.Fatalf("a job on an unregistered dataset: %v", err)
	}
	if err := applyCmd(t, f, RegisterDataset{Dataset: testDataset("legal", false)}); err != nil {
		t.Fatal(err)
	}
	if err := applyCmd(t, f, SubmitJob{ID: "j1", Spec: testJobSpec(), SubmittedBy: "n1"}); err != nil {
		t.Fatal(err)
	}
	if err := applyCmd(t, f, SubmitJob{ID: "j1", Spec: testJobSpec(), SubmittedBy: "n1"}); !errors.Is(err, ErrConflict) {
		t.Errorf("the same job id twice: %v", err)
	}
	if err := applyCmd(t, f, SetJobState{ID: "j1", State: JobRunning, From: []JobState{JobSubmitted}}); err != nil {
		t.Fatal(err)
	}
	if err := applyCmd(t, f, SetJobState{ID: "j1", State: JobRunning, From: []JobState{JobSubmitted}}); !errors.Is(err, ErrJobFinal) {
		t.Errorf("running from submitted twice: %v", err)
	}
	for _, step := range []int{20, 40} {
		if err := applyCmd(t, f, RecordCheckpoint{ID: "j1", Checkpoint: testCheckpoint(step)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := applyCmd(t, f, RecordCheckpoint{ID: "j1", Checkpoint: testCheckpoint(40)}); !errors.Is(err, ErrStaleEpoch) {
		t.Errorf("a checkpoint not after the last: %v", err)
	}
	if err := applyCmd(t, f, RecordCheckpoint{ID: "j1", Checkpoint: testCheckpoint(101)}); !errors.Is(err, ErrInvalidCommand) {
		t.Errorf("a checkpoint beyond the job's steps: %v", err)
	}
	if err := applyCmd(t, f, SetJobState{ID: "j1", State: JobCancelled}); err != nil {
		t.Fatal(err)
	}
	if err := applyCmd(t, f, SetJobState{ID: "j1", State: JobCompleted}); !errors.Is(err, ErrJobFinal) {
		t.Errorf("completing a cancelled job: %v", err)
	}
	j, ok := f.state().Job("j1")
	if !ok || j.State != JobCancelled || len(j.Checkpoints) != 2 || j.Seq != 1 {
		t.Fatalf("job %+v", j)
	}
	if cp, _ := j.LastCheckpoint(); cp.Step != 40 {
		t.Errorf("last checkpoint at %d", cp.Step)
	}
	// The jobs survive a snapshot.
	snap := snapshotBytes(t, f)
	g := newFSM()
	if err := g.Restore(io.NopCloser(bytes.NewReader(snap))); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(f.state(), g.state()) {
		t.Fatalf("restored state differs")
	}
}

func TestJobSpecValidation(t *testing.T) {
	for name, mut := range map[string]func(*JobSpec){
		"no steps":          func(s *JobSpec) { s.Steps = 0 },
		"micro over global": func(s *JobSpec) { s.MicroBatch = 17 },
		"negative lr":       func(s *JobSpec) { s.LR = -1 },
		"NaN clip":          func(s *JobSpec) { s.Clip = nan() },
		"bad base hash":     func(s *JobSpec) { s.Base.Weights = "x" },
		"no replicas":       func(s *JobSpec) { s.Replicas = 0 },
		// A base's tokenizer files: the names join a directory on every
		// member, so only the known ones pass.
		"tokenizer path": func(s *JobSpec) {
			s.Base.Tokenizer = map[string]string{"tokenizer.json": hexHash('1'), "../x": hexHash('2')}
		},
		"tokenizer vocab.json": func(s *JobSpec) {
			s.Base.Tokenizer = map[string]string{"tokenizer.json": hexHash('1'), "vocab.json": hexHash('2')}
		},
		"tokenizer bad hash": func(s *JobSpec) { s.Base.Tokenizer = map[string]string{"tokenizer.json": "x"} },
		"tokenizer no json":  func(s *JobSpec) { s.Base.Tokenizer = map[string]string{"tokenizer_config.json": hexHash('1')} },
	} {
		s := testJobSpec()
		mut(&s)
		if _, err := EncodeCommand(SubmitJob{ID: "j", Spec: s, SubmittedBy: "n1"}); !errors.Is(err, ErrInvalidCommand) {
			t.Errorf("%s: %v", name, err)
		}
	}
	if _, err := EncodeCommand(SubmitJob{ID: "J_1", Spec: testJobSpec(), SubmittedBy: "n1"}); !errors.Is(err, ErrInvalidCommand) {
		t.Error("a job id with upper case and _ accepted")
	}
	s := testJobSpec()
	s.Base.Tokenizer = map[string]string{"tokenizer.json": hexHash('1'), "tokenizer_config.json": hexHash('2'), "chat_template.jinja": hexHash('3')}
	if _, err := EncodeCommand(SubmitJob{ID: "j", Spec: s, SubmittedBy: "n1"}); err != nil {
		t.Errorf("a base with its three tokenizer files: %v", err)
	}
	cp := testCheckpoint(20)
	cp.Tokenizer = map[string]string{"tokenizer.json": hexHash('1'), "special_tokens_map.json": hexHash('2')}
	if _, err := EncodeCommand(RecordCheckpoint{ID: "j", Checkpoint: cp}); !errors.Is(err, ErrInvalidCommand) {
		t.Errorf("a checkpoint with an unknown tokenizer file: %v", err)
	}
}

// A job whose base has no tokenizer files encodes (and so hashes and
// replicates) exactly as before ModelRef and Checkpoint had them: the spec,
// the command that submits it and a checkpoint record.
func TestJobEncodingWithoutTokenizerUnchanged(t *testing.T) {
	spec, err := json.Marshal(testJobSpec())
	if err != nil {
		t.Fatal(err)
	}
	const wantSpec = `{"base":{"config":"` + "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" + `","weights":"` +
		"bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb" + `"},"dataset":"` + "dddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddd" +
		`","steps":100,"global_batch":16,"micro_batch":8,"lr":0.001,"min_lr_frac":0.1,"warmup":10,"weight_decay":0.1,"clip":1,"seed":1,` +
		`"checkpoint_every":20,"eval_every":20,"hash_every":10,"replicas":2}`
	if string(spec) != wantSpec {
		t.Errorf("spec JSON\n got %s\nwant %s", spec, wantSpec)
	}
	cmd, err := EncodeCommand(SubmitJob{ID: "j1", Spec: testJobSpec(), SubmittedBy: "n1"})
	if err != nil {
		t.Fatal(err)
	}
	if want := `,"p":{"id":"j1","spec":` + wantSpec + `,"submitted_by":"n1"}}`; !bytes.HasSuffix(cmd, []byte(want)) {
		t.Errorf("submit command\n got %s\nwant it ending %s", cmd, want)
	}
	cp, err := json.Marshal(testCheckpoint(20))
	if err != nil {
		t.Fatal(err)
	}
	const wantCp = `{"step":20,"config":"` + "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" + `","weights":"` + "cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc" +
		`","state":"` + "eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee" + `","weights_hash":"` + "ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff" +
		`","holders":["n1","n2"]}`
	if string(cp) != wantCp {
		t.Errorf("checkpoint JSON\n got %s\nwant %s", cp, wantCp)
	}
	// An empty map is no files, and encodes as none.
	s := testJobSpec()
	s.Base.Tokenizer = map[string]string{}
	if b, _ := json.Marshal(s); string(b) != wantSpec {
		t.Errorf("spec with an empty tokenizer map: %s", b)
	}
}

func nan() float64 { var z float64; return z / z }
