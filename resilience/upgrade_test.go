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

// An attempt timeout must not break protocol upgrades through the proxy:
// the 101 passes, and the upgraded connection carries data both ways, past
// the attempt timeout (it bounds the handshake, not the conversation).
func TestProxyUpgradeWithAttemptTimeout(t *testing.T) {
	upstream := httptest.NewServer(http.HandlerFunc(echoUpgrade))
	defer upstream.Close()
	target, _ := url.Parse(upstream.URL)
	clock := resiliencetest.NewClock(t0)
	base := &http.Transport{}
	defer base.CloseIdleConnections()
	proxy, err := NewProxy(target, ProxyConfig{Transport: TransportConfig{
		Base: base, Clock: clock, AttemptTimeout: time.Second, Retry: RetryConfig{MaxAttempts: 1}}})
	if err != nil {
		t.Fatal(err)
	}
	front := httptest.NewServer(proxy)
	defer front.Close()

	conn, err := net.Dial("tcp", front.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
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
	upstream := httptest.NewServer(http.HandlerFunc(echoUpgrade))
	defer upstream.Close()
	target, _ := url.Parse(upstream.URL)
	base := &http.Transport{}
	defer base.CloseIdleConnections()
	proxy, err := NewProxy(target, ProxyConfig{Transport: TransportConfig{
		Base: base, AttemptTimeout: time.Minute, Retry: RetryConfig{MaxAttempts: 1}}})
	if err != nil {
		t.Fatal(err)
	}
	front := httptest.NewServer(proxy)
	defer front.Close()
	conn, err := net.Dial("tcp", front.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(conn, "GET / HTTP/1.1\r\nHost: front\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n")
	br := bufio.NewReader(conn)
	if resp, err := http.ReadResponse(br, nil); err != nil || resp.StatusCode != 101 {
		t.Fatalf("handshake: %v, %v", resp, err)
	}
	// The client says its last line and closes its side: the echo of that
	// line still comes back before the end.
	io.WriteString(conn, "bye\n")
	conn.(*net.TCPConn).CloseWrite()
	rest, err := io.ReadAll(br)
	if err != nil || string(rest) != "bye\n" {
		t.Errorf("after half-closing: read %q, %v; want the echo, then EOF", rest, err)
	}
}
