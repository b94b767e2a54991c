package command

import "sync"

// signal broadcasts "something changed" to any number of waiters in this
// process. The zero value is ready to use.
type signal struct {
	mu sync.Mutex
	ch chan struct{}
}

// wait returns a channel closed by the next notify. Take it before looking
// at what may change, then wait on it.
func (s *signal) wait() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ch == nil {
		s.ch = make(chan struct{})
	}
	return s.ch
}

// notify wakes every waiter.
func (s *signal) notify() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ch != nil {
		close(s.ch)
		s.ch = nil
	}
}

// watchers wakes the waiters of one command at a time: a change of a
// command wakes only those who wait for it, however many wait for others.
type watchers struct {
	mu sync.Mutex
	m  map[string]*watch
}

type watch struct {
	n  int // waiters
	ch chan struct{}
}

// wait returns a channel closed by the next notify of id. The caller must
// call done(id) once it stops waiting.
func (w *watchers) wait(id string, again bool) <-chan struct{} {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.m == nil {
		w.m = make(map[string]*watch)
	}
	wt := w.m[id]
	if wt == nil {
		wt = &watch{ch: make(chan struct{})}
		w.m[id] = wt
	}
	if !again {
		wt.n++
	}
	return wt.ch
}

// done ends one waiter's wait for id.
func (w *watchers) done(id string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if wt := w.m[id]; wt != nil {
		if wt.n--; wt.n <= 0 {
			delete(w.m, id)
		}
	}
}

// notify wakes the waiters of id.
func (w *watchers) notify(id string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if wt := w.m[id]; wt != nil {
		close(wt.ch)
		wt.ch = make(chan struct{})
	}
}
