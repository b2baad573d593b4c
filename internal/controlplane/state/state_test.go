package state

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestSaveLoadRoundTrip(t *testing.T) {
	dir := t.TempDir()
	path := Path(dir)
	if st, err := Load(path); st != nil || err != nil {
		t.Fatalf("missing file: %v, %v; want nil, nil (first start)", st, err)
	}
	want := New()
	want.Services["web"] = Service{Active: "green", Previous: "blue",
		Targets: map[string][]Target{"green": {{Addr: "127.0.0.1:9012"}, {Addr: "127.0.0.1:9011", Label: "g1"}}}}
	want.Services["api"] = Service{Active: "blue"}
	for i := 0; i < 5; i++ {
		if err := Save(path, want); err != nil {
			t.Fatal(err)
		}
	}
	got, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("loaded %+v, want %+v", got, want)
	}
	// Only the state file is left: no temporary files.
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 || entries[0].Name() != FileName {
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		t.Fatalf("state dir holds %v, want only %s", names, FileName)
	}
	info, _ := os.Stat(path)
	if info.Mode().Perm() != 0o600 {
		t.Errorf("state file mode %v, want 0600", info.Mode().Perm())
	}
}

func TestSaveReplacesWholeFile(t *testing.T) {
	path := Path(t.TempDir())
	big := New()
	big.Services["web"] = Service{Active: "green", Targets: map[string][]Target{"green": make([]Target, 50)}}
	for i := range big.Services["web"].Targets["green"] {
		big.Services["web"].Targets["green"][i] = Target{Addr: "127.0.0.1:9000"}
	}
	if err := Save(path, big); err != nil {
		t.Fatal(err)
	}
	small := New()
	small.Services["web"] = Service{Active: "blue"}
	if err := Save(path, small); err != nil {
		t.Fatal(err)
	}
	got, err := Load(path)
	if err != nil {
		t.Fatalf("after a shorter write: %v", err)
	}
	if got.Services["web"].Active != "blue" || len(got.Services["web"].Targets) != 0 {
		t.Fatalf("loaded %+v", got)
	}
}

func TestLoadErrorsNameTheFile(t *testing.T) {
	cases := map[string]struct{ content, want string }{
		"corrupt":     {`{"version": 1, "services": {`, "not a valid cutover state file"},
		"empty":       {"", "is empty"},
		"unknown key": {`{"version": 1, "services": {}, "colour": "blue"}`, "unknown field"},
		"no version":  {`{"services": {}}`, `no "version"`},
		"newer":       {`{"version": 99, "services": {}}`, "newer cutover"},
		"no active":   {`{"version": 1, "services": {"web": {}}}`, `service "web" has no active pool`},
		"trailing":    {`{"version": 1, "services": {}} {}`, "data after"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), FileName)
			if err := os.WriteFile(path, []byte(c.content), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := Load(path)
			if err == nil {
				t.Fatal("no error")
			}
			msg := err.Error()
			for _, want := range []string{path, c.want, "delete it"} {
				if !strings.Contains(msg, want) {
					t.Errorf("error %q does not contain %q", msg, want)
				}
			}
		})
	}
}

func TestSaveFailsInMissingFolder(t *testing.T) {
	path := filepath.Join(t.TempDir(), "missing", FileName)
	err := Save(path, New())
	if err == nil || !strings.Contains(err.Error(), path) {
		t.Fatalf("save into a missing folder: %v", err)
	}
}
