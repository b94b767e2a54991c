package command

import (
	"context"
	"errors"

	"github.com/recado-dev/recado"
	"github.com/recado-dev/recado/eventstore"
	"github.com/recado-dev/recado/resilience"
	"github.com/recado-dev/recado/resilience/problem"
)

// Command is a command on its way to its handler.
type Command struct {
	// ID identifies the command: its record's ID when it was accepted, the
	// ID given to [Bus.Dispatch] (a new one by default) otherwise. The
	// events it writes get IDs derived from it ([EventID]).
	ID string
	// Type is the name the command's Go type is registered under.
	Type string
	// Value is the command, decoded: a value of the registered Go type.
	Value any
	// Key orders the command among others (see [Route.Key]): by convention
	// the stream of the aggregate it acts on.
	Key string
	// Metadata is what the caller sent along (correlation ID, trace
	// context, ...). The events the command writes carry it, with the
	// command's ID as their causation ID.
	Metadata recado.Metadata
	// Attempt is 1 for the first run, 2 for the second, ...
	Attempt int
}

// Result is what a handler decided: the events to append to one stream (if
// any) and where the command's result can be seen. Handlers decide; the
// [Bus] or the [Worker] appends, so that an accepted command's events and
// its "succeeded" state commit in one unit of work, and a conflict reloads
// and decides again.
type Result struct {
	// Stream, Expected and Events are the append: the stream, the version
	// it must be at (the version the handler read, usually) and the
	// events. An event without ID gets the ID [EventID] derives from the
	// command's ID and the event's index, and every event gets the
	// command's metadata where its own is empty, and the command's ID as
	// causation ID.
	Stream   string
	Expected eventstore.ExpectedVersion
	Events   []recado.Event
	// Location names the command's result, for callers: "/orders/42". Over
	// HTTP, the status of a succeeded command redirects there.
	Location string

	snapshot *snapshotPlan // set by the handlers of a Repository
}

// Outcome is what a command did: where its events went.
type Outcome struct {
	// ID is the command's ID.
	ID string
	// Stream, FirstVersion and LastVersion say where its events are;
	// Position is the last one's position in the global log (wait for a
	// read model to reach it to read your own write). Empty when the
	// command wrote no events.
	Stream                    string
	FirstVersion, LastVersion uint64
	Position                  recado.Position
	// Location is the handler's [Result.Location].
	Location string
	// Duplicate reports that the events were stored already, by an earlier
	// run of the same command.
	Duplicate bool
}

// Handler handles commands: it decides what a command does, as a
// [Result]. A Handler must be safe for concurrent use.
//
// An error refuses the command or reports a failure. Errors are classified
// by [resilience.Classify]: one marked [resilience.MarkPermanent] (and
// [Reject]'s, and a [problem.Details]) fails an accepted command for good,
// with a problem description; any other is retried with back-off and, when
// the attempts run out, the command is dead-lettered.
type Handler interface {
	Handle(ctx context.Context, c *Command) (Result, error)
}

// HandlerFunc is a function that is a [Handler].
type HandlerFunc func(ctx context.Context, c *Command) (Result, error)

// Handle calls f.
func (f HandlerFunc) Handle(ctx context.Context, c *Command) (Result, error) { return f(ctx, c) }

// Middleware wraps a Handler with behaviour of its own (validation,
// logging, metrics, resilience policies), as net/http middleware does.
type Middleware func(Handler) Handler

// Reject returns an error that refuses a command for good: an accepted
// command fails, with err's message as its problem's detail, and is not
// retried. The errors of a [Decider]'s Decide are rejections already.
func Reject(err error) error {
	if err == nil {
		return nil
	}
	return resilience.MarkPermanent(err)
}

// rejectUnmarked makes err a rejection unless it carries a class of its own
// (resilience.MarkNotReady, say).
func rejectUnmarked(err error) error {
	if err == nil || resilience.Classify(err) != resilience.ClassTransient {
		return err
	}
	return Reject(err)
}

// permanent reports whether err refuses a command for good.
func permanent(err error) bool {
	var d problem.Details
	return resilience.IsPermanent(err) || errors.As(err, &d) || errors.Is(err, eventstore.ErrStreamDeleted)
}

// problemOf describes err for a command's status.
func problemOf(err error, title string) problem.Details {
	var d problem.Details
	if errors.As(err, &d) {
		d.Detail = clean(d.Detail, maxProblemText)
		return d
	}
	if errors.Is(err, ErrInvalid) {
		title = "Invalid command"
	}
	return problem.Details{Title: title, Detail: clean(err.Error(), maxProblemText)}
}

// commit appends res's events to events (in tx, when it is not nil) as the
// command c's. The caller saves the snapshot res plans once they have
// committed ([saveSnapshot]). A conflict is returned as
// it is, for the caller to decide again; an unknown outcome is retried
// with the same events.
func commit(ctx context.Context, events *eventstore.Store, c *Command, res *Result, tx recado.Tx) (Outcome, error) {
	out := Outcome{ID: c.ID, Location: res.Location}
	if err := checkText("location", res.Location, MaxLocationLen); err != nil {
		return out, invalid("the handler's result: %v", err)
	}
	if len(res.Events) == 0 {
		return out, nil
	}
	if events == nil {
		return out, invalid("the handler returned events, and there is no event store to append them to")
	}
	prepare(c, res)
	opts := []eventstore.AppendOption{eventstore.Expect(res.Expected)}
	if tx != nil {
		opts = append(opts, eventstore.InTx(tx))
	}
	var ar eventstore.AppendResult
	var err error
	for try := 0; ; try++ {
		ar, err = events.Append(ctx, res.Stream, res.Events, opts...)
		if !errors.Is(err, eventstore.ErrUnknownOutcome) || tx != nil || try == 2 || ctx.Err() != nil {
			break
		}
	}
	if err != nil {
		return out, err
	}
	out.Stream, out.FirstVersion, out.LastVersion = res.Stream, ar.FirstVersion, ar.LastVersion
	out.Position, out.Duplicate = ar.LastPosition, ar.Duplicate
	return out, nil
}

// prepare gives res's events their derived IDs and the command's metadata.
func prepare(c *Command, res *Result) {
	for i := range res.Events {
		e := &res.Events[i]
		if e.ID == "" {
			e.ID = EventID(c.ID, i)
		}
		md := &e.Metadata
		if md.CorrelationID == "" {
			md.CorrelationID = c.Metadata.CorrelationID
			if md.CorrelationID == "" {
				md.CorrelationID = c.ID
			}
		}
		if md.CausationID == "" {
			md.CausationID = c.ID
		}
		if md.IdempotencyKey == "" {
			md.IdempotencyKey = c.Metadata.IdempotencyKey
		}
		if md.TraceParent == "" {
			md.TraceParent, md.TraceState = c.Metadata.TraceParent, c.Metadata.TraceState
		}
	}
}
