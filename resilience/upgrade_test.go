package resilience

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"
	"time"

	"github.com/recado-dev/recado/resilience/resiliencetest"
)

// echoUpgrade is an upstream that switches protocols to a line echo, as a
// WebSocket server would.
func echoUpgrade(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Upgrade") != "echo" {
		http.Error(w, "upgrade required", http.StatusUpgradeRequired)
		return
	}
	conn, rw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return
	}
	defer conn.Close()
	rw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n")
	rw.Flush()
	for {
		line, err := rw.ReadString('\n')
		if err != nil {
			return
		}
		rw.WriteString(line)
		rw.Flush()
	}
}

// upgradeThroughProxy starts an echo upstream and a proxy (with cfg) in
// front of it, and switches a client connection to the echo protocol
// through the proxy. It returns the connection and its reader.
func upgradeThroughProxy(t *testing.T, cfg TransportConfig) (net.Conn, *bufio.Reader) {
	t.Helper()
	upstream := httptest.NewServer(http.HandlerFunc(echoUpgrade))
	t.Cleanup(upstream.Close)
	target, _ := url.Parse(upstream.URL)
	base := &http.Transport{}
	t.Cleanup(base.CloseIdleConnections)
	cfg.Base, cfg.Retry = base, RetryConfig{MaxAttempts: 1}
	proxy, err := NewProxy(target, ProxyConfig{Transport: cfg})
	if err != nil {
		t.Fatal(err)
	}
	front := httptest.NewServer(proxy)
	t.Cleanup(front.Close)

	conn, err := net.Dial("tcp", front.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	conn.SetDeadline(time.Now().Add(10 * time.Second)) // a hang fails the test instead of blocking it
	io.WriteString(conn, "GET /chat HTTP/1.1\r\nHost: front\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n")
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		body, _ := io.ReadAll(resp.Body)
		t.Fatalf("status %d %s, want 101 Switching Protocols", resp.StatusCode, body)
	}
	return conn, br
}

// An attempt timeout must not break protocol upgrades through the proxy:
// the 101 passes, and the upgraded connection carries data both ways, past
// the attempt timeout (it bounds the handshake, not the conversation).
func TestProxyUpgradeWithAttemptTimeout(t *testing.T) {
	clock := resiliencetest.NewClock(t0)
	conn, br := upgradeThroughProxy(t, TransportConfig{Clock: clock, AttemptTimeout: time.Second})
	echo := func(msg string) {
		t.Helper()
		io.WriteString(conn, msg+"\n")
		got, err := br.ReadString('\n')
		if err != nil || got != msg+"\n" {
			t.Fatalf("echo of %q: %q, %v", msg, got, err)
		}
	}
	echo("hello")
	clock.Advance(2 * time.Second) // past the attempt timeout
	echo("still there")
}

func TestProxyUpgradeHalfClose(t *testing.T) {
	conn, br := upgradeThroughProxy(t, TransportConfig{AttemptTimeout: time.Minute})
	// The client says its last line and closes its side: the echo of that
	// line still comes back before the end.
	io.WriteString(conn, "bye\n")
	conn.(*net.TCPConn).CloseWrite()
	rest, err := io.ReadAll(br)
	if err != nil || string(rest) != "bye\n" {
		t.Errorf("after half-closing: read %q, %v; want the echo, then EOF", rest, err)
	}
}
