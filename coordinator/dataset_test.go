package coordinator

import (
	"errors"
	"strings"
	"testing"
)

func hexHash(c byte) string { return strings.Repeat(string(c), 64) }

// testDataset has ID dddd…, manifest eeee…, shards 1111… (train) and
// 2222… (held-out), registered by n1.
func testDataset(name string, local bool) Dataset {
	return Dataset{ID: hexHash('d'), Name: name, Manifest: hexHash('e'), Source: "n1", Local: local, Replicas: 2,
		Shards: []DatasetShard{{Hash: hexHash('1'), Bytes: 100, Split: "train", Sequences: 3},
			{Hash: hexHash('2'), Bytes: 50, Split: "heldout", Sequences: 1}}}
}

func TestDatasetCommands(t *testing.T) {
	f := newFSM()
	d := testDataset("legal", false)
	if err := applyCmd(t, f, RegisterDataset{Dataset: d}); err != nil {
		t.Fatal(err)
	}
	if err := applyCmd(t, f, RegisterDataset{Dataset: d}); err != nil {
		t.Errorf("registering the same dataset again: %v", err)
	}
	other := d
	other.ID = hexHash('f')
	if err := applyCmd(t, f, RegisterDataset{Dataset: other}); !errors.Is(err, ErrConflict) {
		t.Errorf("a second dataset under the same name: %v", err)
	}
	place := func(v uint64, p map[string][]string) error {
		return applyCmd(t, f, PlaceDataset{ID: d.ID, Version: v, Placement: p})
	}
	if err := place(2, map[string][]string{hexHash('1'): {"n1"}}); !errors.Is(err, ErrStaleEpoch) {
		t.Errorf("placement version 2 before 1: %v", err)
	}
	if err := place(1, map[string][]string{hexHash('3'): {"n1"}}); !errors.Is(err, ErrInvalidCommand) {
		t.Errorf("placement of a shard the dataset lacks: %v", err)
	}
	if err := place(1, map[string][]string{hexHash('1'): {"n1", "n2"}}); err != nil {
		t.Fatal(err)
	}
	got, ok := f.state().Dataset("legal")
	if !ok || got.PlacementVersion != 1 || len(got.Placement[hexHash('1')]) != 2 {
		t.Fatalf("dataset after placement: %+v", got)
	}
	if byID, ok := f.state().Dataset(d.ID); !ok || byID.Name != "legal" {
		t.Error("dataset not found by its ID")
	}
	if err := applyCmd(t, f, DeleteDataset{ID: d.ID}); err != nil {
		t.Fatal(err)
	}
	if _, ok := f.state().Dataset("legal"); ok {
		t.Error("deleted dataset still there")
	}
	if err := applyCmd(t, f, PlaceDataset{ID: d.ID, Version: 1, Placement: map[string][]string{}}); !errors.Is(err, ErrUnknownDataset) {
		t.Errorf("placing a deleted dataset: %v", err)
	}
}

// A local (federated) dataset may only ever be placed on its source.
func TestLocalDatasetStaysOnItsNode(t *testing.T) {
	f := newFSM()
	d := testDataset("bio", true)
	if err := applyCmd(t, f, RegisterDataset{Dataset: d}); err != nil {
		t.Fatal(err)
	}
	err := applyCmd(t, f, PlaceDataset{ID: d.ID, Version: 1, Placement: map[string][]string{hexHash('1'): {"n1", "n2"}}})
	if err == nil || !strings.Contains(err.Error(), "local to n1") {
		t.Errorf("a local dataset placed on another node: %v", err)
	}
	if err := applyCmd(t, f, PlaceDataset{ID: d.ID, Version: 1, Placement: map[string][]string{hexHash('1'): {"n1"}, hexHash('2'): {"n1"}}}); err != nil {
		t.Fatal(err)
	}
}

func TestDatasetValidation(t *testing.T) {
	for name, mut := range map[string]func(*Dataset){
		"short id":         func(d *Dataset) { d.ID = "abc" },
		"upper-case id":    func(d *Dataset) { d.ID = strings.Repeat("A", 64) },
		"no shards":        func(d *Dataset) { d.Shards = nil },
		"duplicate shard":  func(d *Dataset) { d.Shards[1].Hash = d.Shards[0].Hash },
		"bad split":        func(d *Dataset) { d.Shards[0].Split = "test" },
		"zero replicas":    func(d *Dataset) { d.Replicas = 0 },
		"empty name":       func(d *Dataset) { d.Name = "" },
		"with a placement": func(d *Dataset) { d.Placement = map[string][]string{hexHash('1'): {"n1"}} },
	} {
		d := testDataset("x", false)
		mut(&d)
		if _, err := EncodeCommand(RegisterDataset{Dataset: d}); !errors.Is(err, ErrInvalidCommand) {
			t.Errorf("%s: %v", name, err)
		}
	}
}
