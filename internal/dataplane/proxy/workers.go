package proxy

import "time"

// workers serve the requests of connections whose own goroutine only
// waits (ServeConn over TLS). Serving a request grows a goroutine's stack
// to 8 KiB and more (routing, the upstream exchange, the access log), and
// Go keeps a parked goroutine's stack unless a collection finds most of it
// unused; a connection's goroutine that served its requests itself would
// keep that stack through every idle second. Here the waiting goroutine
// stays at the starting size, and the stacks that grew belong to as many
// workers as there are requests at once, which end when no work comes.
type workers struct {
	jobs chan *workerJob
}

// workerJob is a connection's request hand-off: serve runs on a worker,
// which sends its result on done. Made once per connection.
type workerJob struct {
	serve func() bool
	done  chan bool
}

// workerIdle is how long a worker waits for another job before it ends.
const workerIdle = 10 * time.Second

func newWorkers() *workers { return &workers{jobs: make(chan *workerJob)} }

// run serves j on an idle worker, or a new one, and returns its result.
func (w *workers) run(j *workerJob) bool {
	select {
	case w.jobs <- j:
	default:
		go w.work(j)
	}
	return <-j.done
}

func (w *workers) work(j *workerJob) {
	t := time.NewTimer(workerIdle)
	defer t.Stop()
	for {
		j.done <- j.serve()
		t.Reset(workerIdle)
		select {
		case j = <-w.jobs:
		case <-t.C:
			return
		}
	}
}
