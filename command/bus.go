package command

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"sync"

	"github.com/recado-dev/recado"
	"github.com/recado-dev/recado/eventstore"
)

// DefaultConflictRetries is the default of [BusConfig.ConflictRetries].
const DefaultConflictRetries = 3

// BusConfig sets up a Bus. The zero value is ready to use, but a Bus
// without Events cannot dispatch a command whose handler returns events.
type BusConfig struct {
	// Events is the event store Dispatch appends the handlers' events to.
	Events *eventstore.Store
	// Codec encodes command values for the command store; default JSON.
	Codec recado.Codec
	// ConflictRetries is how many times Dispatch (and a Worker) runs a
	// handler again after its append found the stream at another version
	// than the handler read: it reloads and decides again. When they run
	// out, the conflict is returned. Default 3; a negative value means none.
	ConflictRetries int
	// Logger receives what callers cannot be told: a snapshot that could
	// not be saved. Nil discards it.
	Logger *slog.Logger
}

// Bus routes commands to their handlers, by type. Register a handler for
// each command type with [Handle], wrap every handler with [Bus.Use], and
// run a command now with [Bus.Dispatch] or later with a [Queue] and a
// [Worker]. A Bus is safe for concurrent use once its handlers are
// registered.
type Bus struct {
	cfg   BusConfig
	codec recado.Codec
	log   *slog.Logger

	mu     sync.RWMutex
	byName map[string]*route
	byType map[reflect.Type]*route
	mw     []Middleware
}

// NewBus returns a Bus with no handlers.
func NewBus(cfg BusConfig) *Bus {
	if cfg.ConflictRetries == 0 {
		cfg.ConflictRetries = DefaultConflictRetries
	}
	cfg.ConflictRetries = max(cfg.ConflictRetries, 0)
	b := &Bus{cfg: cfg, codec: cfg.Codec, log: cfg.Logger, byName: make(map[string]*route), byType: make(map[reflect.Type]*route)}
	if b.codec == nil {
		b.codec = recado.JSONCodec{}
	}
	if b.log == nil {
		b.log = slog.New(slog.DiscardHandler)
	}
	return b
}

// Route is how a Bus handles commands of type C.
type Route[C any] struct {
	// Name is the command type's stable name: it is stored with accepted
	// commands and is the last segment of the HTTP adapter's paths. Keep it
	// when the Go type is renamed.
	Name string
	// Key returns the command's ordering key: the stream of the aggregate
	// it acts on, by convention ("order-42"). Accepted commands with one
	// key run one at a time, in the order they were accepted; commands
	// with different keys run in parallel. Nil, or an empty key, orders the
	// command with no other.
	Key func(cmd C) string
	// Validate, if set, checks a command before it is dispatched or
	// accepted; an error refuses it with [ErrInvalid] (HTTP 422). A C with a
	// method Validate() error is checked by that method too.
	Validate func(cmd C) error
	// Handle decides what the command does. It gets the command twice: as
	// the envelope c and as the typed value cmd.
	Handle func(ctx context.Context, c *Command, cmd C) (Result, error)
}

// Validator is a command that checks itself.
type Validator interface{ Validate() error }

// route is a registered Route, with its type erased.
type route struct {
	name     string
	typ      reflect.Type
	key      func(v any) string
	validate func(v any) error
	decode   func(data []byte) (any, error)
	fromJSON func(dec *json.Decoder) (any, error)
	handler  Handler
}

// Handle registers r on b for commands of type C (values of C and of *C).
// A name or a Go type registered already, an empty name or a nil Handle is
// an error.
func Handle[C any](b *Bus, r Route[C]) error {
	typ := reflect.TypeFor[C]()
	if typ.Kind() == reflect.Pointer || typ.Kind() == reflect.Interface {
		return fmt.Errorf("command: handle %s: register a concrete, non-pointer type", typ)
	}
	if err := checkName("command type name", r.Name, MaxTypeLen); err != nil {
		return fmt.Errorf("command: handle %s: %v", typ, err)
	}
	if r.Handle == nil {
		return fmt.Errorf("command: handle %s: no Handle function", r.Name)
	}
	rt := &route{name: r.Name, typ: typ,
		key: func(v any) string {
			if r.Key == nil {
				return ""
			}
			return r.Key(v.(C))
		},
		validate: func(v any) error {
			c := v.(C)
			if r.Validate != nil {
				if err := r.Validate(c); err != nil {
					return err
				}
			}
			if vv, ok := any(c).(Validator); ok {
				return vv.Validate()
			}
			if vv, ok := any(&c).(Validator); ok {
				return vv.Validate()
			}
			return nil
		},
		decode: func(data []byte) (any, error) {
			var c C
			if err := b.codec.Unmarshal(data, &c); err != nil {
				return nil, err
			}
			return c, nil
		},
		fromJSON: func(dec *json.Decoder) (any, error) {
			var c C
			if err := dec.Decode(&c); err != nil {
				return nil, err
			}
			return c, nil
		},
		handler: HandlerFunc(func(ctx context.Context, c *Command) (Result, error) {
			v, ok := c.Value.(C)
			if !ok {
				return Result{}, invalid("command %s holds a %T, not a %s", c.Type, c.Value, typ)
			}
			return r.Handle(ctx, c, v)
		}),
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if old, ok := b.byName[r.Name]; ok {
		return fmt.Errorf("command: handle %s: the name %q is registered already, for %s", typ, r.Name, old.typ)
	}
	if old, ok := b.byType[typ]; ok {
		return fmt.Errorf("command: handle %s: the type is registered already, as %q", typ, old.name)
	}
	b.byName[r.Name], b.byType[typ] = rt, rt
	return nil
}

// Use adds middleware around every handler of b, the first outermost:
// Use(a, b) runs a, which runs b, which runs the handler. It applies to
// every command handled after the call.
func (b *Bus) Use(mw ...Middleware) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.mw = append(b.mw, mw...)
}

// Types returns the names of the registered command types.
func (b *Bus) Types() []string {
	b.mu.RLock()
	defer b.mu.RUnlock()
	names := make([]string, 0, len(b.byName))
	for name := range b.byName {
		names = append(names, name)
	}
	return names
}

// lookup returns the route of v's Go type, and v as a value of it (a *C is
// dereferenced).
func (b *Bus) lookup(v any) (*route, any, error) {
	t := reflect.TypeOf(v)
	if t != nil && t.Kind() == reflect.Pointer {
		rv := reflect.ValueOf(v)
		if rv.IsNil() {
			return nil, nil, invalid("a nil %s", t)
		}
		v, t = rv.Elem().Interface(), t.Elem()
	}
	b.mu.RLock()
	r, ok := b.byType[t]
	b.mu.RUnlock()
	if !ok {
		return nil, nil, &UnknownCommandError{Type: fmt.Sprint(t)}
	}
	return r, v, nil
}

// named returns the route registered under name.
func (b *Bus) named(name string) (*route, error) {
	b.mu.RLock()
	r, ok := b.byName[name]
	b.mu.RUnlock()
	if !ok {
		return nil, &UnknownCommandError{Type: name}
	}
	return r, nil
}

// check validates v, a value of r's type, and returns its key.
func (r *route) check(v any) (key string, err error) {
	if err := r.validate(v); err != nil {
		return "", fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	key = r.key(v)
	if err := checkText("key", key, MaxKeyLen); err != nil {
		return "", invalid("%v", err)
	}
	return key, nil
}

// chain returns r's handler wrapped in b's middleware.
func (b *Bus) chain(r *route) Handler {
	b.mu.RLock()
	defer b.mu.RUnlock()
	h := r.handler
	for i := len(b.mw) - 1; i >= 0; i-- {
		h = b.mw[i](h)
	}
	return h
}

// Dispatch runs the command v now: it validates it, calls its handler
// through the middleware and appends the events the handler decided to the
// Bus's event store, with the version the handler expected. If the stream
// moved on meanwhile, it runs the handler again (it reloads and decides
// again), up to [BusConfig.ConflictRetries] times.
//
// The options [WithID], [WithMetadata] and [InTx] apply: with InTx the
// events join the caller's unit of work, and a conflict is returned at once
// (the unit of work is the caller's to retry). Errors of the handler are
// returned as they are; the others are an [*Error].
func (b *Bus) Dispatch(ctx context.Context, v any, opts ...Option) (Outcome, error) {
	o, err := resolve(opts, "dispatch")
	if err != nil {
		return Outcome{}, &Error{Op: "dispatch", Err: err}
	}
	r, v, err := b.lookup(v)
	if err != nil {
		return Outcome{}, &Error{Op: "dispatch", Err: err}
	}
	fail := func(err error) (Outcome, error) {
		return Outcome{ID: o.id}, &Error{Op: "dispatch", Type: r.name, ID: o.id, Err: err}
	}
	key, err := r.check(v)
	if err != nil {
		return fail(err)
	}
	if err := o.md.Validate(); err != nil {
		return fail(invalid("metadata: %v", err))
	}
	if o.id == "" {
		o.id = recado.NewID()
	}
	c := &Command{ID: o.id, Type: r.name, Value: v, Key: key, Metadata: o.md, Attempt: 1}
	return b.run(ctx, r, c, o.tx == nil, func(ctx context.Context, res *Result) (Outcome, error) {
		out, err := commit(ctx, b.cfg.Events, c, res, o.tx)
		if err != nil {
			return out, &Error{Op: "dispatch", Type: c.Type, ID: c.ID, Err: err}
		}
		saveSnapshot(ctx, o.tx, res, out)
		return out, nil
	})
}

// run calls r's handler for c, through the middleware, and commit with its
// result. When commit's error is a conflict and retry is set, it runs the
// handler again, up to the bus's ConflictRetries times. Errors are returned
// as they are.
func (b *Bus) run(ctx context.Context, r *route, c *Command, retry bool,
	commit func(ctx context.Context, res *Result) (Outcome, error)) (Outcome, error) {
	h := b.chain(r)
	for try := 0; ; try++ {
		res, err := h.Handle(ctx, c)
		if err != nil {
			return Outcome{ID: c.ID}, err
		}
		out, err := commit(ctx, &res)
		if err == nil || !errors.Is(err, eventstore.ErrConflict) || !retry || try >= b.cfg.ConflictRetries {
			return out, err
		}
	}
}
