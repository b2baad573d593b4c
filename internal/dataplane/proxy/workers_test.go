package proxy

import (
	"sync"
	"testing"
)

// TestWorkersServeEachJobItsOwnResult: jobs handed to the workers at once,
// one of them blocked until the others are done, each get their own
// result.
func TestWorkersServeEachJobItsOwnResult(t *testing.T) {
	w := newWorkers()
	release := make(chan struct{})
	blocked := &workerJob{done: make(chan bool, 1), serve: func() bool { <-release; return true }}
	blockedDone := make(chan bool, 1)
	go func() { blockedDone <- w.run(blocked) }()

	const n = 50
	var wg sync.WaitGroup
	errs := make(chan string, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			want := i%2 == 0
			j := &workerJob{done: make(chan bool, 1), serve: func() bool { return want }}
			for range 20 {
				if got := w.run(j); got != want {
					errs <- "a job got another job's result"
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Fatal(e)
	}
	close(release)
	if !<-blockedDone {
		t.Error("the blocked job's result was lost")
	}
}
