package nats_test

import (
	"context"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/recado-dev/recado/transport"
	"github.com/recado-dev/recado/transport/nats"
	"github.com/recado-dev/recado/transport/transporttest"
)

// proxy forwards TCP connections to a server and cuts them all on demand.
type proxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	conns  map[net.Conn]bool
	wg     sync.WaitGroup
}

func newProxy(t *testing.T, target string) *proxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{ln: ln, target: target, conns: map[net.Conn]bool{}}
	p.wg.Go(p.accept)
	t.Cleanup(func() {
		_ = ln.Close()
		p.cut()
		p.wg.Wait()
	})
	return p
}

func (p *proxy) url() string { return "nats://" + p.ln.Addr().String() }

func (p *proxy) accept() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		s, err := net.Dial("tcp", p.target)
		if err != nil {
			_ = c.Close()
			continue
		}
		p.mu.Lock()
		p.conns[c], p.conns[s] = true, true
		p.mu.Unlock()
		for _, pair := range [][2]net.Conn{{c, s}, {s, c}} {
			p.wg.Go(func() {
				_, _ = io.Copy(pair[0], pair[1])
				_ = pair[0].Close()
				_ = pair[1].Close()
			})
		}
	}
}

// cut closes every connection open now; clients reconnect through the proxy.
func (p *proxy) cut() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := len(p.conns)
	for c := range p.conns {
		_ = c.Close()
		delete(p.conns, c)
	}
	return n
}

// The relay, the server and an inbox consumer while a proxy between them
// cuts every connection every 200 ms, and deliveries are duplicated and
// reordered: every event has its effect once.
func TestChaosProxy(t *testing.T) {
	server := open(t, "")
	p := newProxy(t, strings.TrimPrefix(server.URL(), "nats://"))
	b, err := nats.Open(context.Background(), nats.Options{URL: p.url(), AckWait: 2 * time.Second, ReconnectWait: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	pub, err := b.Publisher()
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()

	var cuts atomic.Int64
	stop := make(chan struct{})
	var cutter sync.WaitGroup
	cutter.Go(func() {
		tick := time.NewTicker(200 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				if p.cut() > 0 {
					cuts.Add(1)
				}
			}
		}
	})
	defer func() {
		close(stop)
		cutter.Wait()
		t.Logf("the proxy cut the connections %d times", cuts.Load())
	}()

	transporttest.RunChaos(t, transporttest.Transport{
		Publisher: transport.Guard(pub, transport.GuardConfig{Timeout: 2 * time.Second}),
		NewSubscriber: func(tb testing.TB) transport.Subscriber {
			s, err := b.Subscriber()
			if err != nil {
				tb.Fatal(err)
			}
			tb.Cleanup(func() { _ = s.Close() })
			return s
		},
	}, transporttest.Chaos{Duplicate: 0.1, Reorder: 0.1})
}
