package commandtest

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/recado-dev/recado"
	"github.com/recado-dev/recado/command"
	"github.com/recado-dev/recado/eventstore"
)

// The sample domain the suite and the benchmarks run: orders, as a
// [command.Decider]. It is exported so that backends' tests and the
// package's own tests share it.

// OrderCommand is a command to an order.
type OrderCommand interface{ Order() string }

// PlaceOrder places a new order.
type PlaceOrder struct {
	OrderID string   `json:"orderId"`
	Items   []string `json:"items"`
	Total   int      `json:"totalCents"`
}

// AddLine adds the line-th line (from 1) to a placed order: lines must come
// in order, so a line that arrives before the one before it is refused.
type AddLine struct {
	OrderID string `json:"orderId"`
	Line    int    `json:"line"`
	Item    string `json:"item"`
}

// CancelOrder cancels a placed order.
type CancelOrder struct {
	OrderID string `json:"orderId"`
	Reason  string `json:"reason"`
}

func (c PlaceOrder) Order() string  { return c.OrderID }
func (c AddLine) Order() string     { return c.OrderID }
func (c CancelOrder) Order() string { return c.OrderID }

// Validate refuses a PlaceOrder without an ID or items, or with a negative
// total.
func (c PlaceOrder) Validate() error {
	switch {
	case c.OrderID == "":
		return errors.New("no order ID")
	case len(c.Items) == 0:
		return errors.New("no items")
	case c.Total < 0:
		return fmt.Errorf("negative total %d", c.Total)
	}
	return nil
}

// OrderEvent is an event of an order.
type OrderEvent interface{ isOrderEvent() }

// The events of an order.
type (
	OrderPlaced struct {
		OrderID string   `json:"orderId"`
		Items   []string `json:"items"`
		Total   int      `json:"totalCents"`
	}
	LineAdded struct {
		OrderID string `json:"orderId"`
		Line    int    `json:"line"`
		Item    string `json:"item"`
	}
	OrderCancelled struct {
		OrderID string `json:"orderId"`
		Reason  string `json:"reason"`
	}
)

func (OrderPlaced) isOrderEvent()    {}
func (LineAdded) isOrderEvent()      {}
func (OrderCancelled) isOrderEvent() {}

// Order is the state of an order.
type Order struct {
	ID        string   `json:"id"`
	Placed    bool     `json:"placed"`
	Cancelled bool     `json:"cancelled"`
	Items     []string `json:"items"`
	Total     int      `json:"totalCents"`
	Lines     int      `json:"lines"`
}

// The refusals of the order decider.
var (
	ErrPlaced    = errors.New("the order is placed already")
	ErrNotPlaced = errors.New("the order is not placed")
	ErrCancelled = errors.New("the order is cancelled")
	ErrLineOrder = errors.New("line out of order")
)

// Orders is the order decider.
var Orders = command.Decider[Order, OrderCommand, OrderEvent]{
	Decide: decideOrder,
	Evolve: evolveOrder,
}

func decideOrder(o Order, c OrderCommand) ([]OrderEvent, error) {
	switch c := c.(type) {
	case PlaceOrder:
		if o.Placed {
			return nil, ErrPlaced
		}
		return []OrderEvent{OrderPlaced(c)}, nil
	case AddLine:
		switch {
		case !o.Placed:
			return nil, ErrNotPlaced
		case o.Cancelled:
			return nil, ErrCancelled
		case c.Line != o.Lines+1:
			return nil, fmt.Errorf("%w: line %d after line %d", ErrLineOrder, c.Line, o.Lines)
		}
		return []OrderEvent{LineAdded(c)}, nil
	case CancelOrder:
		switch {
		case !o.Placed:
			return nil, ErrNotPlaced
		case o.Cancelled:
			return nil, ErrCancelled
		}
		return []OrderEvent{OrderCancelled(c)}, nil
	}
	return nil, fmt.Errorf("not an order command: %T", c)
}

func evolveOrder(o Order, e OrderEvent) Order {
	switch e := e.(type) {
	case OrderPlaced:
		o.ID, o.Placed, o.Items, o.Total = e.OrderID, true, slices.Clone(e.Items), e.Total
	case LineAdded:
		o.Lines = e.Line
		o.Items = append(slices.Clone(o.Items), e.Item)
	case OrderCancelled:
		o.Cancelled = true
	}
	return o
}

// OrderStream is the stream of the order id.
func OrderStream(id string) string { return "order-" + id }

// RegisterOrderEvents registers the order events in reg.
func RegisterOrderEvents(reg *recado.Registry) error {
	return errors.Join(
		recado.Register[OrderPlaced](reg, "OrderPlaced"),
		recado.Register[LineAdded](reg, "LineAdded"),
		recado.Register[OrderCancelled](reg, "OrderCancelled"),
	)
}

// NewOrderRepository returns a repository of orders in events, with a
// registry of the order events, and with a snapshot every every events when
// snapshots is not nil.
func NewOrderRepository(events *eventstore.Store, snapshots *command.SnapshotStore, every int) (*command.Repository[Order, OrderEvent], error) {
	reg := recado.NewRegistry(nil)
	if err := RegisterOrderEvents(reg); err != nil {
		return nil, err
	}
	return command.NewRepository(command.RepositoryConfig[Order, OrderEvent]{
		Events: events, Registry: reg, Evolve: Orders.Evolve,
		Snapshots: snapshots, SnapshotEvery: every, SnapshotSchema: "order/v1",
	})
}

// decideAs is the order decider for commands of type C.
func decideAs[C OrderCommand](o Order, c C) ([]OrderEvent, error) { return Orders.Decide(o, c) }

// RouteOrders registers the order commands on bus ("PlaceOrder", "AddLine",
// "CancelOrder"), decided on the orders of repo. Their key is the order's
// stream; a placed order's result location is "/orders/{id}".
func RouteOrders(bus *command.Bus, repo *command.Repository[Order, OrderEvent]) error {
	key := func(c OrderCommand) string { return OrderStream(c.Order()) }
	place := command.Decide(repo, decideAs[PlaceOrder])
	return errors.Join(
		command.Handle(bus, command.Route[PlaceOrder]{Name: "PlaceOrder", Key: func(c PlaceOrder) string { return key(c) },
			Handle: func(ctx context.Context, c *command.Command, cmd PlaceOrder) (command.Result, error) {
				res, err := place(ctx, c, cmd)
				res.Location = "/orders/" + cmd.OrderID
				return res, err
			}}),
		command.Handle(bus, command.Route[AddLine]{Name: "AddLine", Key: func(c AddLine) string { return key(c) },
			Handle: command.Decide(repo, decideAs[AddLine])}),
		command.Handle(bus, command.Route[CancelOrder]{Name: "CancelOrder", Key: func(c CancelOrder) string { return key(c) },
			Handle: command.Decide(repo, decideAs[CancelOrder])}),
	)
}
