package bridgesvc_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"runtime"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/mfaflow/mfaflow/events/protocol"
	"github.com/mfaflow/mfaflow/mobile-bridge/bridgesvc"
	"github.com/mfaflow/mfaflow/mobile-bridge/internal/bridgetest"
	"github.com/mfaflow/mfaflow/pkg/fault"
	"github.com/mfaflow/mfaflow/pkg/natstest"
	"github.com/mfaflow/mfaflow/pkg/testkit"
)

func TestConnectionCap(t *testing.T) {
	env := bridgetest.Start(t, bridgesvc.Config{MaxConnections: 2})
	first, second := dial(t, env), dial(t, env)
	for _, ws := range []*websocket.Conn{first, second} {
		sendRaw(t, ws, websocket.BinaryMessage, []byte{1})
		wantError(t, read(t, ws), "", fault.BadRequest)
	}

	d := websocket.Dialer{HandshakeTimeout: readWait}
	ws, resp, err := d.Dial(env.WSURL, nil)
	if err == nil {
		_ = ws.Close()
		t.Fatal("third connection accepted over a cap of 2")
	}
	if !errors.Is(err, websocket.ErrBadHandshake) || resp == nil {
		t.Fatalf("dial: %v, want a refused handshake", err)
	}
	var p struct {
		Status int    `json:"status"`
		Code   string `json:"code"`
	}
	decodeErr := json.NewDecoder(resp.Body).Decode(&p)
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || decodeErr != nil || p.Code != string(fault.Unavailable) || p.Status != 503 {
		t.Fatalf("refusal: %d %+v %v, want 503 code unavailable", resp.StatusCode, p, decodeErr)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/problem+json" {
		t.Fatalf("Content-Type %q", ct)
	}
	if ra := resp.Header.Get("Retry-After"); ra != strconv.Itoa(bridgesvc.RetryAfter) {
		t.Fatalf("Retry-After %q, want %d", ra, bridgesvc.RetryAfter)
	}
	if n := env.Bridge.Connections(); n != 2 {
		t.Fatalf("%d connections, want 2: a refusal must not take a slot", n)
	}
	// The open connections are unaffected.
	sendRaw(t, second, websocket.BinaryMessage, []byte{1})
	wantError(t, read(t, second), "", fault.BadRequest)

	// A connection that closes frees its slot.
	_ = first.Close()
	natstest.Eventually(t, readWait, connections(env, 1)) // the closed connection frees its slot
	third := dial(t, env)
	wantUsable(t, env, third)
	if _, resp, err := d.Dial(env.WSURL, nil); err == nil || resp == nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("dial over the cap again: %v, want 503", err)
	} else {
		_ = resp.Body.Close()
	}
}

func TestFrameRate(t *testing.T) {
	clk := testkit.NewClock(time.Unix(1_700_000_000, 0))
	env := bridgetest.Start(t, bridgesvc.Config{FrameRate: 1, FrameBurst: 3, Clock: clk.Now})
	env.Status.Add("eid-1", bridgetest.Enrollment{StatusID: "st-1", Secret: testSecret})
	ws := dial(t, env, protocol.Subprotocol)

	// The clock stands still: the burst passes, the rest is refused, each with its own id.
	for i := 1; i <= 6; i++ {
		send(t, ws, scan(strconv.Itoa(i), "eid-1"))
	}
	sendRaw(t, ws, websocket.TextMessage, []byte("not json"))
	for i := 1; i <= 3; i++ {
		wantAck(t, read(t, ws), strconv.Itoa(i), "SCANNED")
	}
	for i := 4; i <= 6; i++ {
		f := read(t, ws)
		wantError(t, f, strconv.Itoa(i), fault.TooManyRequests)
	}
	wantError(t, read(t, ws), "", fault.TooManyRequests)
	if n := len(env.Status.Scans()); n != 3 {
		t.Fatalf("status service saw %d scans, want 3: refused frames must not reach it", n)
	}

	// A second later there is one token again: one frame passes, the next is refused.
	clk.Advance(time.Second)
	send(t, ws, scan("7", "eid-1"))
	send(t, ws, scan("8", "eid-1"))
	wantAck(t, read(t, ws), "7", "SCANNED")
	wantError(t, read(t, ws), "8", fault.TooManyRequests)

	// After a pause the whole burst is back.
	clk.Advance(time.Minute)
	for i := 9; i <= 11; i++ {
		send(t, ws, scan(strconv.Itoa(i), "eid-1"))
		wantAck(t, read(t, ws), strconv.Itoa(i), "SCANNED")
	}
}

func TestFrameFloodCloses(t *testing.T) {
	clk := testkit.NewClock(time.Unix(1_700_000_000, 0))
	const burst = 2
	env := bridgetest.Start(t, bridgesvc.Config{FrameRate: 1, FrameBurst: burst, Clock: clk.Now})
	ws := dial(t, env)

	// The burst, then FloodFactor × burst excess frames that are answered, then one too many.
	excess := bridgesvc.FloodFactor * burst
	for i := range burst + excess + 1 {
		send(t, ws, protocol.Request{Type: protocol.TypeScan, ID: strconv.Itoa(i)})
	}
	for i := range burst {
		wantError(t, read(t, ws), strconv.Itoa(i), fault.BadRequest) // exchange_id is required
	}
	for i := range excess {
		wantError(t, read(t, ws), strconv.Itoa(burst+i), fault.TooManyRequests)
	}
	if err := ws.SetReadDeadline(time.Now().Add(readWait)); err != nil {
		t.Fatal(err)
	}
	_, _, err := ws.ReadMessage()
	if !websocket.IsCloseError(err, websocket.ClosePolicyViolation) {
		t.Fatalf("read after the flood: %v, want close 1008", err)
	}
	natstest.Eventually(t, readWait, connections(env, 0)) // the flooding connection ends
}

// connections is a check for natstest.Eventually: the bridge holds n connections.
func connections(env *bridgetest.Env, n int) func() error {
	return func() error {
		if got := env.Bridge.Connections(); got != n {
			return fmt.Errorf("%d connections, want %d", got, n)
		}
		return nil
	}
}

func heapAndStacks() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse + m.StackInuse
}

// maxGoroutinesPerIdleConn is what an idle connection may hold: its read loop, nothing else
// (pings come from a timer).
const maxGoroutinesPerIdleConn = 1

func TestIdleConnectionCost(t *testing.T) {
	const n = 1000
	env := bridgetest.Start(t, bridgesvc.Config{})
	// Small client buffers, returned between writes, so the measure is mostly the server's.
	d := websocket.Dialer{HandshakeTimeout: readWait, ReadBufferSize: 256, WriteBufferSize: 256, WriteBufferPool: &sync.Pool{}}
	// Warm up: one connection, so lazily allocated server state is not counted.
	warm := dial(t, env)
	sendRaw(t, warm, websocket.BinaryMessage, []byte{1})
	wantError(t, read(t, warm), "", fault.BadRequest)

	g0, m0 := runtime.NumGoroutine(), heapAndStacks()
	conns := make([]*websocket.Conn, 0, n)
	t.Cleanup(func() {
		for _, ws := range conns {
			_ = ws.Close()
		}
	})
	for range n {
		ws, resp, err := d.Dial(env.WSURL, nil)
		if err != nil {
			t.Fatalf("dial: %v", err)
		}
		_ = resp.Body.Close()
		conns = append(conns, ws)
		readHello(t, ws)
		// One round trip proves the server side is in its read loop.
		sendRaw(t, ws, websocket.BinaryMessage, []byte{1})
		wantError(t, read(t, ws), "", fault.BadRequest)
	}
	if got := env.Bridge.Connections(); got != n+1 {
		t.Fatalf("%d connections open, want %d", got, n+1)
	}
	// Goroutines that only helped a handshake end by themselves; a few unrelated ones (NATS,
	// timers) may come and go, hence the slack.
	const slack = 20
	var g int
	natstest.Eventually(t, readWait, func() error {
		if g = runtime.NumGoroutine() - g0; g > maxGoroutinesPerIdleConn*n+slack {
			return fmt.Errorf("%d goroutines, want at most %d", g, maxGoroutinesPerIdleConn*n+slack)
		}
		return nil
	})
	m := heapAndStacks()
	t.Logf("%d idle connections: %.2f goroutines and %d bytes (heap+stacks, server and client) per connection",
		n, float64(g)/n, (int64(m)-int64(m0))/n)
	runtime.KeepAlive(conns)
}
