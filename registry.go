package recado

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"sync"
)

// Codec encodes event values to bytes and back. The default is [JSONCodec].
type Codec interface {
	Marshal(v any) ([]byte, error)
	Unmarshal(data []byte, v any) error
}

// JSONCodec is the default [Codec]: encoding/json.
type JSONCodec struct{}

// Marshal implements [Codec].
func (JSONCodec) Marshal(v any) ([]byte, error) { return json.Marshal(v) }

// Unmarshal implements [Codec].
func (JSONCodec) Unmarshal(data []byte, v any) error { return json.Unmarshal(data, v) }

// An Upcaster turns an event of an old type into the next version: it returns the
// event with a new Type and Data (and, if it wants, other fields changed).
// Upcasters chain: the result is upcast again while an upcaster is registered for
// its type.
type Upcaster func(Event) (Event, error)

// Errors of the registry.
var (
	// ErrUnknownType is returned when decoding an event whose type (after
	// upcasting) no Go type is registered for, and when encoding a value whose Go
	// type is not registered.
	ErrUnknownType = errors.New("recado: unknown event type")
	// ErrRegistered is returned when registering a type name or Go type twice.
	ErrRegistered = errors.New("recado: already registered")
)

// UnknownTypeError names the type that is not registered.
type UnknownTypeError struct {
	Type string // the event type name, or the Go type for encoding
}

func (e *UnknownTypeError) Error() string {
	return fmt.Sprintf("recado: unknown event type %q", e.Type)
}

// Is reports whether target is [ErrUnknownType].
func (e *UnknownTypeError) Is(target error) bool { return target == ErrUnknownType }

// maxUpcasts bounds an upcasting chain, so that a cycle is an error, not a hang.
const maxUpcasts = 64

// Registry maps Go types to stable event type names and back.
//
// Register each event type once at start-up with [Register]; a Registry is then
// safe for concurrent use. Names are part of the stored data: choose them once
// ("OrderPlaced", "order.placed.v2") and keep them when the Go type is renamed.
// When an event's shape changes, register the new shape under a new name and an
// [Upcaster] from the old name, so old events decode as the new type.
type Registry struct {
	codec Codec

	mu        sync.RWMutex
	names     map[reflect.Type]string
	types     map[string]reflect.Type
	upcasters map[string]Upcaster
}

// NewRegistry returns an empty registry that encodes with codec (JSON when nil).
func NewRegistry(codec Codec) *Registry {
	if codec == nil {
		codec = JSONCodec{}
	}
	return &Registry{
		codec:     codec,
		names:     make(map[reflect.Type]string),
		types:     make(map[string]reflect.Type),
		upcasters: make(map[string]Upcaster),
	}
}

// Codec returns the codec the registry encodes with.
func (r *Registry) Codec() Codec { return r.codec }

// Register maps the Go type T to the type name name. T is the value type (a
// struct, usually); values of T and *T encode under name, and decoding gives a T.
func Register[T any](r *Registry, name string) error {
	t := reflect.TypeFor[T]()
	if t.Kind() == reflect.Pointer {
		return fmt.Errorf("recado: register %s as %q: register the element type, not a pointer", t, name)
	}
	if name == "" {
		return fmt.Errorf("recado: register %s: empty type name", t)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if old, ok := r.types[name]; ok {
		return fmt.Errorf("%w: type name %q (for %s)", ErrRegistered, name, old)
	}
	if old, ok := r.names[t]; ok {
		return fmt.Errorf("%w: Go type %s (as %q)", ErrRegistered, t, old)
	}
	if _, ok := r.upcasters[name]; ok {
		return fmt.Errorf("%w: type name %q has an upcaster, so it is an old name", ErrRegistered, name)
	}
	r.types[name] = t
	r.names[t] = name
	return nil
}

// AddUpcaster registers up for events whose type is from: an old name no Go type
// is registered under any more.
func (r *Registry) AddUpcaster(from string, up Upcaster) error {
	if from == "" || up == nil {
		return errors.New("recado: AddUpcaster needs a type name and a function")
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.types[from]; ok {
		return fmt.Errorf("%w: %q is a current type name; upcast from old names only", ErrRegistered, from)
	}
	if _, ok := r.upcasters[from]; ok {
		return fmt.Errorf("%w: upcaster for %q", ErrRegistered, from)
	}
	r.upcasters[from] = up
	return nil
}

// TypeName returns the name v's type is registered under.
func (r *Registry) TypeName(v any) (string, error) {
	t := reflect.TypeOf(v)
	if t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	r.mu.RLock()
	name, ok := r.names[t]
	r.mu.RUnlock()
	if !ok {
		return "", &UnknownTypeError{Type: fmt.Sprint(t)}
	}
	return name, nil
}

// Encode returns the type name and encoded data of v.
func (r *Registry) Encode(v any) (typ string, data []byte, err error) {
	if typ, err = r.TypeName(v); err != nil {
		return "", nil, err
	}
	if data, err = r.codec.Marshal(v); err != nil {
		return "", nil, fmt.Errorf("recado: encode %s: %w", typ, err)
	}
	return typ, data, nil
}

// NewEvent returns an event with a new ID holding v, ready to append.
func (r *Registry) NewEvent(v any, md Metadata) (Event, error) {
	typ, data, err := r.Encode(v)
	if err != nil {
		return Event{}, err
	}
	return Event{ID: NewID(), Type: typ, Data: data, Metadata: md}, nil
}

// Upcast applies the registered upcasters to e until its type has none. An event
// of a type with no upcaster is returned as it is.
func (r *Registry) Upcast(e Event) (Event, error) {
	for range maxUpcasts {
		r.mu.RLock()
		up, ok := r.upcasters[e.Type]
		r.mu.RUnlock()
		if !ok {
			return e, nil
		}
		from, id := e.Type, e.ID
		next, err := up(e)
		if err != nil {
			return Event{}, fmt.Errorf("recado: upcast %s event %s: %w", from, id, err)
		}
		e = next
	}
	return Event{}, fmt.Errorf("recado: upcast event %s: more than %d steps (a cycle?)", e.ID, maxUpcasts)
}

// Decode upcasts e and decodes its data into a new value of the registered Go
// type, returned as that type (not a pointer). An event type with no Go type
// registered gives an error that errors.Is [ErrUnknownType].
func (r *Registry) Decode(e Event) (any, error) {
	e, err := r.Upcast(e)
	if err != nil {
		return nil, err
	}
	r.mu.RLock()
	t, ok := r.types[e.Type]
	r.mu.RUnlock()
	if !ok {
		return nil, &UnknownTypeError{Type: e.Type}
	}
	p := reflect.New(t)
	if err := r.codec.Unmarshal(e.Data, p.Interface()); err != nil {
		return nil, fmt.Errorf("recado: decode %s event %s: %w", e.Type, e.ID, err)
	}
	return p.Elem().Interface(), nil
}

// Decode decodes e as a T. It is an error if e's type, after upcasting, is not
// the name T is registered under.
func Decode[T any](r *Registry, e Event) (T, error) {
	var zero T
	v, err := r.Decode(e)
	if err != nil {
		return zero, err
	}
	t, ok := v.(T)
	if !ok {
		return zero, fmt.Errorf("recado: event %s is a %T, not a %s", e.ID, v, reflect.TypeFor[T]())
	}
	return t, nil
}
