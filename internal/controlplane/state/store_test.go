package state

import (
	"context"
	"errors"
	"os"
	"strings"
	"sync"
	"testing"
)

// Both stores: a commit names the revision its change was computed from,
// and of two writers that read the same revision exactly one wins.
func TestStoresCompareAndSwap(t *testing.T) {
	dir := t.TempDir()
	for name, pair := range map[string][2]Store{
		// Two FileStores on one folder stand for two processes.
		"file":   {NewFileStore(dir), NewFileStore(dir)},
		"memory": func() [2]Store { m := NewMemStore(); return [2]Store{m, m} }(),
	} {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			a, b := pair[0], pair[1]
			rev, err := a.Commit(ctx, []Change{{Service: "web", Value: &Service{Active: "blue"}}})
			if err != nil || rev <= 0 {
				t.Fatalf("first commit: %d, %v", rev, err)
			}
			// Ten writers start from the same revision; one may win.
			var wg sync.WaitGroup
			wins := make(chan string, 10)
			for i := range 10 {
				w := a
				if i%2 == 1 {
					w = b
				}
				wg.Add(1)
				go func() {
					defer wg.Done()
					pool := []string{"green", "purple"}[i%2]
					if _, err := w.Commit(ctx, []Change{{Service: "web", Value: &Service{Active: pool, Previous: "blue"}, Revision: rev}}); err == nil {
						wins <- pool
					} else if !errors.Is(err, ErrConflict) || !strings.Contains(err.Error(), `service "web"`) {
						t.Errorf("losing commit: %v, want ErrConflict naming the service", err)
					}
				}()
			}
			wg.Wait()
			close(wins)
			var won []string
			for p := range wins {
				won = append(won, p)
			}
			if len(won) != 1 {
				t.Fatalf("%d writers won from one revision (%v), want 1", len(won), won)
			}
			got, err := b.Load(ctx)
			if err != nil {
				t.Fatal(err)
			}
			web := got["web"]
			if web.Active != won[0] || web.Previous != "blue" || web.Revision <= rev {
				t.Fatalf("stored %+v, want the winner %s at a revision above %d", web, won[0], rev)
			}
			// A commit of several services is all or nothing.
			_, err = a.Commit(ctx, []Change{
				{Service: "api", Value: &Service{Active: "blue"}},
				{Service: "web", Value: &Service{Active: "blue"}, Revision: rev}, // stale
			})
			if !errors.Is(err, ErrConflict) {
				t.Fatalf("commit with one stale revision: %v", err)
			}
			if got, _ := a.Load(ctx); got["api"].Active != "" || got["web"].Active != won[0] {
				t.Fatalf("a refused commit changed the store: %+v", got)
			}
			// Removing a service.
			if _, err := a.Commit(ctx, []Change{{Service: "web", Revision: web.Revision}}); err != nil {
				t.Fatal(err)
			}
			if got, _ := b.Load(ctx); len(got) != 0 {
				t.Fatalf("after removing web: %+v", got)
			}
		})
	}
}

// A version 1 file (no revisions) is read, and the next commit from
// revision 0 writes version 2.
func TestFileStoreReadsVersion1(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(Path(dir), []byte(`{"version": 1, "services": {"web": {"active": "green", "previous": "blue"}}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	fs := NewFileStore(dir)
	got, err := fs.Load(context.Background())
	if err != nil || got["web"].Active != "green" || got["web"].Revision != 0 {
		t.Fatalf("version 1 file: %+v, %v", got, err)
	}
	if _, err := fs.Commit(context.Background(), []Change{{Service: "web", Value: &Service{Active: "blue", Previous: "green"}}}); err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(Path(dir))
	if !strings.Contains(string(data), `"version": 2`) || !strings.Contains(string(data), `"revision": 1`) {
		t.Fatalf("written file:\n%s", data)
	}
}
