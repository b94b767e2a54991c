//go:build unix

package postgres

import (
	"errors"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/recado-dev/recado/eventstore"
)

// TestCloseGivesUpOnUnansweredCommit: the server stops answering (its backend
// is stopped with SIGSTOP) after a group commit was sent. Close gives up on
// it after its grace period, and the append gets ErrUnknownOutcome: the server
// may still commit it when it runs again.
func TestCloseGivesUpOnUnansweredCommit(t *testing.T) {
	db := openTest(t, Options{Writers: 1})
	s := db.Events()
	db.events.hooks.grace = 100 * time.Millisecond
	stopped := make(chan int, 1)
	db.events.hooks.beforeWrite = func(conn *pgx.Conn) {
		pid := int(conn.PgConn().PID())
		if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
			stopped <- 0
			return
		}
		stopped <- pid
	}
	appended := make(chan error, 1)
	go func() {
		_, err := s.Append(t.Context(), "s", testEvents("E", 1))
		appended <- err
	}()
	pid := <-stopped
	if pid == 0 {
		db.events.hooks.beforeWrite = nil
		<-appended
		t.Skip("cannot stop the server's backend (not local, or not allowed)")
	}
	defer syscall.Kill(pid, syscall.SIGCONT)
	closed := make(chan struct{})
	go func() { db.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(guard):
		syscall.Kill(pid, syscall.SIGCONT)
		<-closed
		t.Fatalf("Close did not return in %s while the server did not answer a commit", guard)
	}
	if err := <-appended; !errors.Is(err, eventstore.ErrUnknownOutcome) {
		t.Errorf("append whose commit was never answered: %v, want ErrUnknownOutcome", err)
	}
}
