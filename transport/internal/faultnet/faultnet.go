// Package faultnet cuts network connections on demand, for tests of broker
// outages: a Listener that drops every connection it accepted and refuses
// new ones until restored, and a Proxy in front of a server built on it.
package faultnet

import (
	"io"
	"net"
	"sync"
)

// Listener wraps a net.Listener. While cut, it closes the connections it
// accepts at once; Cut also closes those it accepted before.
type Listener struct {
	net.Listener

	mu    sync.Mutex
	conns map[net.Conn]bool
	cut   bool
}

// Wrap returns l with Cut and Restore.
func Wrap(l net.Listener) *Listener { return &Listener{Listener: l, conns: map[net.Conn]bool{}} }

// Accept returns the next connection accepted while the listener is not cut.
func (l *Listener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		l.mu.Lock()
		if l.cut {
			l.mu.Unlock()
			_ = c.Close()
			continue
		}
		tc := &conn{Conn: c, l: l}
		l.conns[tc] = true
		l.mu.Unlock()
		return tc, nil
	}
}

// Cut closes every accepted connection and refuses new ones until Restore.
func (l *Listener) Cut() {
	l.mu.Lock()
	l.cut = true
	conns := l.conns
	l.conns = map[net.Conn]bool{}
	l.mu.Unlock()
	for c := range conns {
		_ = c.(*conn).Conn.Close()
	}
}

// Restore accepts connections again.
func (l *Listener) Restore() {
	l.mu.Lock()
	l.cut = false
	l.mu.Unlock()
}

type conn struct {
	net.Conn
	l *Listener
}

func (c *conn) Close() error {
	c.l.mu.Lock()
	delete(c.l.conns, c)
	c.l.mu.Unlock()
	return c.Conn.Close()
}

// Proxy forwards the connections made to its address to a target server,
// through a Listener that can be cut.
type Proxy struct {
	*Listener
	target string
	wg     sync.WaitGroup
}

// NewProxy listens on a free port of 127.0.0.1 and forwards to target
// (host:port).
func NewProxy(target string) (*Proxy, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &Proxy{Listener: Wrap(l), target: target}
	p.wg.Go(p.serve)
	return p, nil
}

// Addr returns the proxy's host:port.
func (p *Proxy) Addr() string { return p.Listener.Addr().String() }

func (p *Proxy) serve() {
	for {
		c, err := p.Accept()
		if err != nil {
			return
		}
		p.wg.Go(func() {
			up, err := net.Dial("tcp", p.target)
			if err != nil {
				_ = c.Close()
				return
			}
			done := make(chan struct{}, 2)
			pipe := func(dst, src net.Conn) {
				_, _ = io.Copy(dst, src)
				done <- struct{}{}
			}
			go pipe(up, c)
			go pipe(c, up)
			<-done // one side ended: end both
			_ = c.Close()
			_ = up.Close()
			<-done
		})
	}
}

// Close stops accepting, closes every connection and waits for the
// forwarding goroutines.
func (p *Proxy) Close() error {
	err := p.Listener.Close()
	p.Cut()
	p.wg.Wait()
	return err
}
