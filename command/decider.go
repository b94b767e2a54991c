package command

// Decider is an aggregate's logic without infrastructure, as two pure
// functions: Decide turns the state and a command into new events (or
// refuses the command), and Evolve folds one event into the state. S is
// the state, C the command, E the events (an interface the event types
// implement, or any).
//
// Domain code written this way is tested as given/when/then, with no store:
//
//	events, err := orders.Run(
//		[]OrderEvent{OrderPlaced{ID: "42"}}, // given
//		PayOrder{ID: "42", Amount: 1850},    // when
//	)                                        // then: events, err
//
// and runs against a store through a [Repository] and [Decide].
type Decider[S, C, E any] struct {
	// Initial returns the state of an aggregate that has no events yet;
	// nil means the zero S.
	Initial func() S
	// Decide returns the events cmd causes in state, or an error that
	// refuses it. It must not do I/O: its error is a rejection (see
	// [Reject]) unless it is marked otherwise (resilience.MarkNotReady).
	Decide func(state S, cmd C) ([]E, error)
	// Evolve returns state with event applied. It may change state in place
	// (a pointer to a struct) and return it.
	Evolve func(state S, event E) S
}

// Fold returns the state events fold into, from the initial state.
func (d Decider[S, C, E]) Fold(events ...E) S {
	return fold(initial(d.Initial), d.Evolve, events)
}

// Run is a given/when/then step: it folds given into the state and returns
// what Decide makes of cmd in it.
func (d Decider[S, C, E]) Run(given []E, cmd C) ([]E, error) {
	return d.Decide(d.Fold(given...), cmd)
}

func initial[S any](f func() S) S {
	if f == nil {
		var zero S
		return zero
	}
	return f()
}

func fold[S, E any](state S, evolve func(S, E) S, events []E) S {
	for _, e := range events {
		state = evolve(state, e)
	}
	return state
}

// Aggregate is state kept as a struct with methods, for code that prefers
// them to a Decider's functions: Apply folds one event into the aggregate.
// With [Apply] as a Repository's Evolve, the aggregate's own methods decide:
//
//	repo, _ := command.NewRepository(command.RepositoryConfig[*Order, OrderEvent]{
//		Initial: func() *Order { return new(Order) },
//		Evolve:  command.Apply[*Order, OrderEvent],
//		...
//	})
//	command.Handle(bus, command.Route[PayOrder]{
//		Name:   "PayOrder",
//		Key:    func(c PayOrder) string { return "order-" + c.ID },
//		Handle: command.Decide(repo, (*Order).Pay),
//	})
type Aggregate[E any] interface {
	Apply(event E)
}

// Apply applies event to the aggregate a and returns a: an Evolve function
// for aggregates with an Apply method.
func Apply[A Aggregate[E], E any](a A, event E) A {
	a.Apply(event)
	return a
}
