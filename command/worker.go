package command

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"slices"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/recado-dev/recado"
	"github.com/recado-dev/recado/command/driver"
	"github.com/recado-dev/recado/eventstore"
	"github.com/recado-dev/recado/resilience"
	"github.com/recado-dev/recado/resilience/deadletter"
	"github.com/recado-dev/recado/resilience/lease"
)

// Defaults of [WorkerConfig].
const (
	DefaultConcurrency     = 16
	DefaultPartitions      = 16
	DefaultLeaseTTL        = 30 * time.Second
	DefaultPollInterval    = 500 * time.Millisecond
	DefaultMaxAttempts     = 5
	DefaultCleanupInterval = time.Hour
)

// defaultBackoff is the default of WorkerConfig.Backoff: from 1 second to 5
// minutes, doubling, with full jitter.
var defaultBackoff = resilience.Backoff{Initial: time.Second, Max: 5 * time.Minute, Multiplier: 2, Jitter: 1}

// WorkerConfig sets up a Worker. Events, Leases and DeadLetters are
// required, and must be stores of the same DB as the Queue's Store and the
// unit of work given to [NewWorker]: a command's events and its state
// commit together only then. Zero or negative numbers take their defaults.
type WorkerConfig struct {
	// Events is the event store the handlers' events are appended to.
	Events *eventstore.Store
	// Leases keeps the leases through which the workers of a queue split
	// its partitions.
	Leases *lease.Store
	// DeadLetters receives the commands that kept failing, as letters of
	// the source "command:" and the queue's name; replaying a letter runs
	// its command again.
	DeadLetters *deadletter.Store

	// Holder names this worker in the leases; it must be unique among the
	// queue's workers. Default: "worker-" and a random suffix.
	Holder string
	// Concurrency is the most commands run at once. Default 16.
	Concurrency int
	// Partitions is how many partitions the queue's commands are split
	// into, by a hash of their key: each is owned by one worker at a time,
	// which runs its commands. It bounds how many workers can share the
	// work, and must be the same for every worker of the queue. Default 16.
	Partitions int
	// LeaseTTL is how long a worker's leases last unless renewed (it
	// renews them every third of it): a worker that dies leaves its
	// partitions, and the commands it was running, to the others after
	// this long. Default 30 seconds.
	LeaseTTL time.Duration
	// PollInterval is how often the worker looks for commands accepted by
	// other processes (those accepted through its own Queue wake it at
	// once), and for replayed dead letters. Default 500 ms.
	PollInterval time.Duration
	// MaxAttempts is how many times a command is started before it is
	// dead-lettered, counting runs whose worker died. Default 5.
	MaxAttempts int
	// Backoff is the delay before a failed command runs again. Default
	// from 1 second to 5 minutes, doubling, with full jitter.
	Backoff resilience.Backoff
	// CleanupInterval is how often the worker that owns the first partition
	// deletes the records older than the Store's retention. Default 1 hour;
	// negative means never.
	CleanupInterval time.Duration
	// Logger receives the worker's troubles (a store that fails, a lease
	// lost) and, at debug level, its leases. Nil discards them.
	Logger *slog.Logger
	// Now is the worker's clock, for back-off and lease renewal; nil means
	// time.Now. Give the Leases store the same clock.
	Now func() time.Time
	// OnTransition, if set, is called after each change of a command's
	// state the worker commits: the hook for metrics and tests. It must be
	// quick and safe for concurrent use.
	OnTransition func(Transition)
}

// Transition is a change of a command's state.
type Transition struct {
	ID, Type, Key string
	From, To      State
	// Attempt is the attempt the change belongs to.
	Attempt int
	// Err is the error that made a command wait for a retry, fail or go to
	// the dead-letter queue.
	Err error
}

// Worker runs the commands of a [Queue] in the background: in the order
// they were accepted among the commands of one key, in parallel across
// keys, with retry and back-off, and into the dead-letter queue when they
// keep failing.
//
// Several workers, in one process or many, share a queue: they split its
// partitions through fenced leases, so each command is run by one worker
// at a time, and a worker that dies leaves its commands to the others when
// its leases lapse. A command's events and its "succeeded" state commit in
// one unit of work, guarded by the lease: a command that wrote its events
// is never run again, and a worker that lost its lease cannot write.
// No transaction is open while a handler runs: a worker claims a command
// (running) in one short unit of work, runs its handler, and records the
// outcome in another.
type Worker struct {
	q      *Queue
	tx     func(ctx context.Context, fn func(tx recado.Tx) error) error
	cfg    WorkerConfig
	now    func() time.Time
	log    *slog.Logger
	source string
	active atomic.Bool
}

// NewWorker returns a Worker for the commands of q, whose units of work run
// on db (a memory.DB, sqlite.DB or postgres.DB: the DB of q's Store and of
// cfg's stores).
func NewWorker[T recado.Tx](db recado.UnitOfWork[T], q *Queue, cfg WorkerConfig) (*Worker, error) {
	switch {
	case db == nil || q == nil:
		return nil, errors.New("command: NewWorker needs a unit of work and a Queue")
	case cfg.Events == nil || cfg.Leases == nil || cfg.DeadLetters == nil:
		return nil, errors.New("command: WorkerConfig needs Events, Leases and DeadLetters")
	}
	if err := cfg.Backoff.Validate(); err != nil {
		return nil, fmt.Errorf("command: WorkerConfig.Backoff: %w", err)
	}
	if cfg.Holder == "" {
		id := recado.NewID()
		cfg.Holder = "worker-" + id[len(id)-12:]
	}
	if err := checkName("holder", cfg.Holder, lease.MaxHolderLen); err != nil {
		return nil, fmt.Errorf("command: WorkerConfig.Holder: %v", err)
	}
	cfg.Concurrency = orDefault(cfg.Concurrency, DefaultConcurrency)
	cfg.Partitions = min(orDefault(cfg.Partitions, DefaultPartitions), 1<<16)
	cfg.LeaseTTL = orDefault(cfg.LeaseTTL, DefaultLeaseTTL)
	cfg.PollInterval = orDefault(cfg.PollInterval, DefaultPollInterval)
	cfg.MaxAttempts = orDefault(cfg.MaxAttempts, DefaultMaxAttempts)
	if cfg.CleanupInterval == 0 {
		cfg.CleanupInterval = DefaultCleanupInterval
	}
	b := cfg.Backoff
	if b.Initial == 0 {
		b.Initial = defaultBackoff.Initial
	}
	if b.Max == 0 {
		b.Max = max(defaultBackoff.Max, b.Initial)
	}
	cfg.Backoff = b
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	tx := func(ctx context.Context, fn func(tx recado.Tx) error) error {
		return db.Tx(ctx, func(tx T) error { return fn(tx) })
	}
	return &Worker{q: q, tx: tx, cfg: cfg, now: clock(cfg.Now), log: log, source: "command:" + q.name}, nil
}

func orDefault[N int | time.Duration](v, def N) N {
	if v <= 0 {
		return def
	}
	return v
}

// Source returns the source of the worker's dead letters: "command:" and
// the queue's name.
func (w *Worker) Source() string { return w.source }

// Run runs commands until ctx ends, then returns nil: it stops taking
// commands, lets the handlers that are running see ctx end (a command whose
// handler returns then goes back to accepted, without counting the
// attempt; one that finishes anyway is recorded), and releases its leases.
// A Worker runs once at a time.
func (w *Worker) Run(ctx context.Context) error {
	if !w.active.CompareAndSwap(false, true) {
		return errors.New("command: Worker.Run is running already")
	}
	defer w.active.Store(false)
	s := &run{owned: make(map[uint32]*partition), inflight: make(map[string]*job),
		cool: make(map[string]time.Time), done: make(chan *job, w.cfg.Concurrency), look: true}
	ticker := time.NewTicker(w.cfg.PollInterval)
	defer ticker.Stop()
	var accepted <-chan struct{}
	for {
		if accepted == nil { // kept until it fires: a select that takes a job's end must not lose it
			accepted = w.q.store.accepted.wait()
		}
		w.maintain(ctx, s)
		if s.look {
			w.schedule(ctx, s)
		}
		select {
		case <-ctx.Done():
			w.stop(ctx, s)
			return nil
		case j := <-s.done:
			s.finish(j, time.Now().Add(w.cfg.PollInterval))
			for more := true; more; { // take every job that has ended since
				select {
				case j := <-s.done:
					s.finish(j, time.Now().Add(w.cfg.PollInterval))
				default:
					more = false
				}
			}
			s.look = s.backlog
		case <-accepted:
			s.look, accepted = true, nil
		case <-ticker.C:
			s.look = true
		}
	}
}

// run is the state of one Run, owned by its loop.
type run struct {
	member      *lease.Lease
	memberAt    time.Time // when the member lease was last renewed
	memberTried time.Time // when the worker last tried to acquire one
	owned       map[uint32]*partition
	balanced    time.Time // when the partitions were last balanced
	cleaned     time.Time // by the worker's clock
	replayed    time.Time // by the wall clock
	inflight    map[string]*job
	cool        map[string]time.Time // commands whose last job recorded nothing: not before
	done        chan *job
	lastQuery   error
	// look is set when there may be commands to start; backlog when the
	// last look left some that were due (for want of a free slot, or
	// behind a running command of their key), so that a job's end is worth
	// a look.
	look, backlog bool
}

type partition struct {
	l        lease.Lease
	renewed  time.Time
	draining bool // given up as soon as its jobs end
	jobs     int
}

// job is one run of one command.
type job struct {
	rec      driver.Record
	part     uint32
	lease    lease.Lease
	recorded bool // its outcome was recorded
}

func (s *run) finish(j *job, coolUntil time.Time) {
	delete(s.inflight, j.rec.ID)
	if p := s.owned[j.part]; p != nil {
		p.jobs--
	}
	if !j.recorded {
		s.cool[j.rec.ID] = coolUntil
	}
}

// storeCtx is the context of the worker's writes: it outlives the Run's
// context, so that a handler that finishes while the worker stops has its
// outcome recorded, and is bounded by the lease's time to live.
func (w *Worker) storeCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), w.cfg.LeaseTTL)
}

func (w *Worker) memberName(i int) string {
	return "command:" + w.q.name + "/member/" + strconv.Itoa(i)
}
func (w *Worker) partitionName(p uint32) string {
	return "command:" + w.q.name + "/partition/" + strconv.FormatUint(uint64(p), 10)
}

// maintain renews the worker's leases, balances the partitions among the
// queue's workers, and, on the owner of partition 0, carries out the
// replays of dead letters and cleans up old records.
func (w *Worker) maintain(ctx context.Context, s *run) {
	sctx, cancel := w.storeCtx(ctx)
	defer cancel()
	now := stamp(w.now)
	third := w.cfg.LeaseTTL / 3
	w.keepMember(sctx, s, now, third)
	for p, part := range s.owned {
		if now.Sub(part.renewed) < third {
			continue
		}
		l, err := w.cfg.Leases.Renew(sctx, part.l, w.cfg.LeaseTTL)
		switch {
		case errors.Is(err, lease.ErrLost):
			w.log.WarnContext(ctx, "command: partition lease lost", "queue", w.q.name, "partition", p, "err", err)
			delete(s.owned, p) // its jobs fail their guard and record nothing
		case err != nil:
			w.log.WarnContext(ctx, "command: partition lease not renewed", "queue", w.q.name, "partition", p, "err", err)
		default:
			part.l, part.renewed = l, now
		}
	}
	if s.balanced.IsZero() || now.Sub(s.balanced) >= third {
		s.balanced = now
		w.balance(sctx, s, now)
	}
	wall := time.Now()
	for id, until := range s.cool {
		if wall.After(until) {
			delete(s.cool, id)
		}
	}
	if p0 := s.owned[0]; p0 != nil && !p0.draining && wall.Sub(s.replayed) >= w.cfg.PollInterval {
		s.replayed = wall
		w.replays(sctx, ctx)
		if w.cfg.CleanupInterval > 0 && (s.cleaned.IsZero() || now.Sub(s.cleaned) >= w.cfg.CleanupInterval) {
			s.cleaned = now
			if n, err := w.q.store.Cleanup(sctx); err != nil {
				w.log.WarnContext(ctx, "command: cleanup failed", "queue", w.q.name, "err", err)
			} else if n > 0 {
				w.log.DebugContext(ctx, "command: records cleaned up", "queue", w.q.name, "n", n)
			}
		}
	}
}

// keepMember holds one of the queue's member leases, through which the
// workers count each other.
func (w *Worker) keepMember(ctx context.Context, s *run, now time.Time, third time.Duration) {
	if s.member != nil {
		if now.Sub(s.memberAt) < third {
			return
		}
		l, err := w.cfg.Leases.Renew(ctx, *s.member, w.cfg.LeaseTTL)
		if err == nil {
			s.member, s.memberAt = &l, now
			return
		}
		if !errors.Is(err, lease.ErrLost) {
			w.log.WarnContext(ctx, "command: member lease not renewed", "queue", w.q.name, "err", err)
			return
		}
		s.member = nil
	}
	if !s.memberTried.IsZero() && now.Sub(s.memberTried) < third {
		return // every member lease was held a moment ago: try again later
	}
	s.memberTried = now
	for i := range w.cfg.Partitions {
		l, err := w.cfg.Leases.Acquire(ctx, w.memberName(i), w.cfg.Holder, w.cfg.LeaseTTL)
		if err == nil {
			s.member, s.memberAt = &l, now
			return
		}
		if !errors.Is(err, lease.ErrHeld) {
			w.log.WarnContext(ctx, "command: member lease not acquired", "queue", w.q.name, "err", err)
			return
		}
	}
}

// balance brings the partitions the worker owns to its share: the
// partition count divided by the number of live workers, rounded up. It
// takes free partitions when it has fewer, and gives up partitions (once
// their running commands end) when it has more.
func (w *Worker) balance(ctx context.Context, s *run, now time.Time) {
	share := 0
	if s.member != nil {
		live, leaseNow := 0, w.cfg.Leases.Now()
		for i := range w.cfg.Partitions {
			if l, err := w.cfg.Leases.Get(ctx, w.memberName(i)); err == nil && l.HeldAt(leaseNow) {
				live++
			}
		}
		live = max(live, 1)
		share = (w.cfg.Partitions + live - 1) / live
	}
	for _, part := range s.owned {
		part.draining = false
	}
	if len(s.owned) < share {
		for _, p := range rand.Perm(w.cfg.Partitions) {
			if len(s.owned) >= share {
				break
			}
			if s.owned[uint32(p)] != nil {
				continue
			}
			l, err := w.cfg.Leases.Acquire(ctx, w.partitionName(uint32(p)), w.cfg.Holder, w.cfg.LeaseTTL)
			if err != nil {
				if !errors.Is(err, lease.ErrHeld) {
					w.log.WarnContext(ctx, "command: partition lease not acquired", "queue", w.q.name, "partition", p, "err", err)
				}
				continue
			}
			w.log.DebugContext(ctx, "command: partition acquired", "queue", w.q.name, "partition", p, "holder", w.cfg.Holder, "token", l.Token)
			part := &partition{l: l, renewed: now}
			for _, j := range s.inflight { // jobs of a former lease, still ending
				if j.part == uint32(p) {
					part.jobs++
				}
			}
			s.owned[uint32(p)] = part
		}
	}
	excess := len(s.owned) - share
	for _, p := range slices.Backward(slices.Sorted(maps.Keys(s.owned))) {
		if excess <= 0 {
			break
		}
		excess--
		part := s.owned[p]
		if part.jobs > 0 {
			part.draining = true
			continue
		}
		w.release(ctx, p, part.l)
		delete(s.owned, p)
	}
}

func (w *Worker) release(ctx context.Context, p uint32, l lease.Lease) {
	if err := w.cfg.Leases.Release(ctx, l); err != nil && !errors.Is(err, lease.ErrLost) {
		w.log.WarnContext(ctx, "command: partition lease not released", "queue", w.q.name, "partition", p, "err", err)
	}
}

// stop waits for the running jobs to end and releases the leases.
func (w *Worker) stop(ctx context.Context, s *run) {
	for len(s.inflight) > 0 {
		s.finish(<-s.done, time.Time{})
	}
	sctx, cancel := w.storeCtx(ctx)
	defer cancel()
	for p, part := range s.owned {
		w.release(sctx, p, part.l)
	}
	if s.member != nil {
		if err := w.cfg.Leases.Release(sctx, *s.member); err != nil && !errors.Is(err, lease.ErrLost) {
			w.log.WarnContext(ctx, "command: member lease not released", "queue", w.q.name, "err", err)
		}
	}
}

// schedule starts the commands that are due in the partitions the worker
// owns: of each key, only the oldest pending command, and only when no
// command of the key is running. They are claimed together, in one unit of
// work.
func (w *Worker) schedule(ctx context.Context, s *run) {
	free := w.cfg.Concurrency - len(s.inflight)
	var owned []uint32
	for p, part := range s.owned {
		if !part.draining {
			owned = append(owned, p)
		}
	}
	if free <= 0 || len(owned) == 0 || ctx.Err() != nil {
		s.look = false
		s.backlog = s.backlog || free <= 0
		return
	}
	s.look, s.backlog = false, false
	sctx, cancel := w.storeCtx(ctx)
	defer cancel()
	recs, err := w.q.store.pending(sctx, driver.Query{Queue: w.q.name, Partitions: uint32(w.cfg.Partitions),
		Owned: owned, Limit: max(256, 4*w.cfg.Concurrency)})
	if err != nil {
		if s.lastQuery == nil || err.Error() != s.lastQuery.Error() {
			w.log.WarnContext(ctx, "command: pending commands unreadable", "queue", w.q.name, "err", err)
		}
		s.lastQuery = err
		return
	}
	s.lastQuery = nil
	now, wall := stamp(w.now), time.Now()
	seen := make(map[string]bool)
	var due []*job
	for i := range recs {
		rec := &recs[i]
		if rec.Key != "" {
			if seen[rec.Key] {
				s.backlog = true
				continue // an older command of the key is pending
			}
			seen[rec.Key] = true
		}
		if s.inflight[rec.ID] != nil || rec.Status == Accepted && rec.NotBefore.After(now) {
			continue
		}
		if until, ok := s.cool[rec.ID]; ok {
			if wall.Before(until) {
				continue
			}
			delete(s.cool, rec.ID)
		}
		p := rec.KeyHash % uint32(w.cfg.Partitions)
		due = append(due, &job{rec: *rec, part: p, lease: s.owned[p].l})
		if len(due) == free {
			s.backlog = s.backlog || i < len(recs)-1
			break
		}
	}
	for _, j := range due {
		s.inflight[j.rec.ID] = j
		s.owned[j.part].jobs++
	}
	if len(due) > 0 {
		go w.start(ctx, s, due)
	}
}

// start claims the jobs' commands in one unit of work, off the loop, and
// runs each claimed one; every job ends on s.done.
func (w *Worker) start(ctx context.Context, s *run, due []*job) {
	sctx, cancel := w.storeCtx(ctx)
	defer cancel()
	for _, c := range w.claim(sctx, ctx, due) {
		j := c.job
		switch {
		case c.err != nil: // not claimed: it cools down before the next try
			s.done <- j
		case c.rec.Status == DeadLettered: // started too many times: its workers died
			j.recorded = true
			w.transition(&c.rec, c.from, DeadLettered, errExhausted(c.rec.Attempts))
			s.done <- j
		default:
			w.transition(&c.rec, c.from, Running, nil)
			j.rec = c.rec
			go func() {
				defer func() { s.done <- j }()
				w.runJob(ctx, j)
			}()
		}
	}
}

// claimed is the outcome of the claim of one job.
type claimed struct {
	job  *job
	rec  driver.Record
	from State
	err  error // the job was not claimed
}

// claim marks the jobs' commands running, in one unit of work guarded by
// their partitions' leases, and returns each with the state it was in. A
// command started MaxAttempts times already (its workers died each time) is
// dead-lettered instead. A job whose lease is lost, or whose command is no
// longer due, is not claimed; if the unit of work fails, none is.
func (w *Worker) claim(ctx, runCtx context.Context, jobs []*job) []claimed {
	out := make([]claimed, len(jobs))
	err := w.tx(ctx, func(tx recado.Tx) error {
		guards := make(map[uint32]error)
		for i, j := range jobs {
			out[i] = claimed{job: j}
			g, ok := guards[j.part]
			if !ok {
				g = w.cfg.Leases.Guard(ctx, tx, j.lease)
				guards[j.part] = g
			}
			if g != nil && !errors.Is(g, lease.ErrLost) {
				return g
			}
			if out[i].err = g; g == nil {
				out[i].rec, out[i].from, out[i].err = w.claimOne(ctx, tx, j)
			}
			if out[i].err != nil && !errors.Is(out[i].err, errSkip) {
				return out[i].err
			}
		}
		return nil
	})
	if err != nil {
		w.log.WarnContext(runCtx, "command: claim not recorded", "queue", w.q.name, "commands", len(jobs), "err", err)
		for i := range out {
			out[i].err = err
		}
	}
	return out
}

// claimOne marks j's command running in tx, or buries it when its attempts
// have run out.
func (w *Worker) claimOne(ctx context.Context, tx recado.Tx, j *job) (rec driver.Record, from State, err error) {
	now := stamp(w.now)
	exhausted := false
	rec, err = w.q.store.change(ctx, tx, j.rec.ID, func(rec *driver.Record) error {
		from = rec.Status
		if !rec.Status.Pending() || rec.Status == Accepted && rec.NotBefore.After(now) {
			return errSkip
		}
		if rec.Attempts >= w.cfg.MaxAttempts {
			exhausted = true
			return errSkip // buried below
		}
		rec.Status, rec.NotBefore = Running, time.Time{}
		rec.Attempts++
		return nil
	})
	if !exhausted {
		return rec, from, err
	}
	j.rec = rec
	rec, err = w.bury(ctx, tx, j, errExhausted(rec.Attempts))
	return rec, from, err
}

// errExhausted is the cause of a command dead-lettered because it was
// started MaxAttempts times and never recorded an outcome.
func errExhausted(attempts int) error {
	return fmt.Errorf("the command was started %d times and its worker stopped (or lost its lease) each time", attempts)
}

// runJob runs the handler of j's command, claimed, and records the outcome.
func (w *Worker) runJob(ctx context.Context, j *job) {
	sctx, cancel := w.storeCtx(ctx)
	defer cancel()
	res, out, err := w.handle(ctx, sctx, j)
	switch {
	case err == nil:
		j.recorded = true
		w.transition(&j.rec, Running, Succeeded, nil)
		saveSnapshot(sctx, nil, res, out)
	case errors.Is(err, errSkip) || errors.Is(err, lease.ErrLost):
		w.dropped(ctx, j, "commit", err)
	case ctx.Err() != nil && resilience.Classify(err) == resilience.ClassIgnored:
		w.record(ctx, sctx, j, err, w.unclaim)
	case permanent(err):
		w.record(ctx, sctx, j, err, w.fail)
	default:
		w.record(ctx, sctx, j, err, w.retryOrBury)
	}
}

// dropped notes a job that recorded nothing: its command stays pending,
// for this worker or the partition's next owner.
func (w *Worker) dropped(ctx context.Context, j *job, step string, err error) {
	level := slog.LevelWarn
	if errors.Is(err, errSkip) || errors.Is(err, lease.ErrLost) {
		level = slog.LevelDebug // someone else has the command now
	}
	w.log.Log(ctx, level, "command: "+step+" not recorded", "id", j.rec.ID, "type", j.rec.Type, "err", err)
}

// handle runs j's handler through the bus and commits its result with the
// state succeeded, in one unit of work guarded by the partition's lease. On
// a conflict it runs the handler again.
func (w *Worker) handle(ctx, sctx context.Context, j *job) (res *Result, out Outcome, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("command: the handler of %s panicked: %v", j.rec.Type, p)
		}
	}()
	r, err := w.q.bus.named(j.rec.Type)
	if err != nil {
		return nil, Outcome{}, err
	}
	v, err := r.decode(j.rec.Data)
	if err != nil {
		return nil, Outcome{}, fmt.Errorf("decode %s: %w", j.rec.Type, err)
	}
	c := &Command{ID: j.rec.ID, Type: j.rec.Type, Value: v, Key: j.rec.Key, Metadata: j.rec.Metadata, Attempt: j.rec.Attempts}
	out, err = w.q.bus.run(ctx, r, c, true, func(_ context.Context, result *Result) (Outcome, error) {
		var out Outcome
		err := w.tx(sctx, func(tx recado.Tx) error {
			if err := w.cfg.Leases.Guard(sctx, tx, j.lease); err != nil {
				return err
			}
			var err error
			if out, err = commit(sctx, w.cfg.Events, c, result, tx); err != nil {
				return err
			}
			j.rec, err = w.q.store.change(sctx, tx, j.rec.ID, func(rec *driver.Record) error {
				if rec.Status != Running || rec.Attempts != j.rec.Attempts {
					return errSkip
				}
				rec.Status, rec.Problem, rec.NotBefore = Succeeded, nil, time.Time{}
				rec.Stream, rec.Version, rec.Position, rec.Location = out.Stream, out.LastVersion, out.Position, result.Location
				return nil
			})
			return err
		})
		if err == nil {
			res = result
		}
		return out, err
	})
	return res, out, err
}

// record records the outcome of a handler that returned cause, with do, in
// a unit of work guarded by the partition's lease.
func (w *Worker) record(ctx, sctx context.Context, j *job,
	cause error, do func(ctx context.Context, tx recado.Tx, j *job, cause error) (driver.Record, error)) {
	from := j.rec.Status
	var rec driver.Record
	err := w.tx(sctx, func(tx recado.Tx) error {
		if err := w.cfg.Leases.Guard(sctx, tx, j.lease); err != nil {
			return err
		}
		var err error
		rec, err = do(sctx, tx, j, cause)
		return err
	})
	if err != nil {
		w.dropped(ctx, j, "outcome", err)
		return
	}
	j.recorded = true
	w.transition(&rec, from, rec.Status, cause)
}

// unclaim puts back a command whose handler stopped because the worker is
// stopping: accepted, without counting the attempt.
func (w *Worker) unclaim(ctx context.Context, tx recado.Tx, j *job, _ error) (driver.Record, error) {
	return w.q.store.change(ctx, tx, j.rec.ID, func(rec *driver.Record) error {
		if rec.Status != Running || rec.Attempts != j.rec.Attempts {
			return errSkip
		}
		rec.Status, rec.Attempts = Accepted, rec.Attempts-1
		return nil
	})
}

// fail records a command its handler refused.
func (w *Worker) fail(ctx context.Context, tx recado.Tx, j *job, cause error) (driver.Record, error) {
	p, err := json.Marshal(problemOf(cause, "Command refused"))
	if err != nil {
		return driver.Record{}, err
	}
	return w.q.store.change(ctx, tx, j.rec.ID, func(rec *driver.Record) error {
		if rec.Status != Running || rec.Attempts != j.rec.Attempts {
			return errSkip
		}
		rec.Status, rec.Problem = Failed, p
		return nil
	})
}

// retryOrBury puts a command that failed back, to run again after a
// back-off, or dead-letters it when its attempts have run out.
func (w *Worker) retryOrBury(ctx context.Context, tx recado.Tx, j *job, cause error) (driver.Record, error) {
	if j.rec.Attempts >= w.cfg.MaxAttempts {
		return w.bury(ctx, tx, j, cause)
	}
	delay := w.cfg.Backoff.Delay(j.rec.Attempts)
	if hint, ok := resilience.RetryAfterHint(cause); ok {
		delay = max(delay, min(hint, w.cfg.Backoff.Max))
	}
	p, err := json.Marshal(problemOf(cause, "Command failed; it will be retried"))
	if err != nil {
		return driver.Record{}, err
	}
	return w.q.store.change(ctx, tx, j.rec.ID, func(rec *driver.Record) error {
		if rec.Status != Running || rec.Attempts != j.rec.Attempts {
			return errSkip
		}
		rec.Status, rec.Problem = Accepted, p
		rec.NotBefore = stamp(w.now).Add(delay).Truncate(timePrecision)
		return nil
	})
}

// bury adds j's command to the dead-letter queue and marks it so, in tx.
func (w *Worker) bury(ctx context.Context, tx recado.Tx, j *job, cause error) (driver.Record, error) {
	rec := j.rec
	msg := recado.Event{ID: rec.ID, Type: rec.Type, Stream: rec.Key, Data: rec.Data, Metadata: rec.Metadata, Time: rec.Accepted}
	l, err := w.cfg.DeadLetters.Add(ctx, tx, deadletter.Failure{Source: w.source, Message: msg, Err: cause, Attempts: rec.Attempts})
	if err != nil {
		return driver.Record{}, err
	}
	p, err := json.Marshal(problemOf(cause, "Command dead-lettered after "+strconv.Itoa(rec.Attempts)+" attempts"))
	if err != nil {
		return driver.Record{}, err
	}
	return w.q.store.change(ctx, tx, rec.ID, func(rec *driver.Record) error {
		if !rec.Status.Pending() {
			return errSkip
		}
		rec.Status, rec.Problem, rec.Letter, rec.NotBefore = DeadLettered, p, l.ID, time.Time{}
		return nil
	})
}

// replays carries out the replay requests of the queue's dead letters: each
// requested command is accepted again, with its attempts counted afresh.
func (w *Worker) replays(sctx, ctx context.Context) {
	_, err := w.cfg.DeadLetters.Redeliver(sctx, w.source, func(ctx context.Context, l deadletter.Letter) error {
		rec, err := w.q.store.change(ctx, nil, l.Message.ID, func(rec *driver.Record) error {
			if rec.Status != DeadLettered {
				return errSkip // accepted again already
			}
			rec.Status, rec.Attempts, rec.NotBefore, rec.Problem, rec.Letter = Accepted, 0, time.Time{}, nil, 0
			return nil
		})
		switch {
		case err == nil:
			w.transition(&rec, DeadLettered, Accepted, nil)
		case errors.Is(err, errSkip):
			return nil
		case errors.Is(err, ErrNotFound): // cleaned up while the letter waited
			m := l.Message
			return w.q.store.restore(ctx, driver.Record{ID: m.ID, Queue: w.q.name, Type: m.Type, Data: m.Data,
				Metadata: m.Metadata, Key: m.Stream, KeyHash: keyHash(m.Stream, m.ID), Fingerprint: fingerprint(m.Type, m.Data),
				Status: Accepted, Accepted: m.Time})
		}
		return err
	})
	if err != nil {
		w.log.WarnContext(ctx, "command: dead-letter replays failed", "source", w.source, "err", err)
	}
}

func (w *Worker) transition(rec *driver.Record, from, to State, err error) {
	if w.cfg.OnTransition != nil {
		w.cfg.OnTransition(Transition{ID: rec.ID, Type: rec.Type, Key: rec.Key, From: from, To: to, Attempt: rec.Attempts, Err: err})
	}
}
