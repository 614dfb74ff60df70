// Command bench-load is a load generator for the dev stack. In one run it starts the whole
// stack in-process (random ports, a temporary data dir, as tests/harness does) and a bare
// net/http server with a trivial JSON endpoint and an SSE endpoint, drives both over loopback
// HTTP with the same client code, and prints every figure with its ratio to bare. The
// throughput figures (TOTP sign-ins, polls, initiations) and bare are driven by a raw
// keep-alive HTTP/1.1 client (rawclient.go): Go's net/http client costs more CPU than the
// server it measures.
//
//	go run ./devstack/cmd/bench-load            # or: make bench-load
//	go run ./devstack/cmd/bench-load -d 1s      # shorter phases
//	go run ./devstack/cmd/bench-load -only sign -md run.md -svg docs/signin-load.svg
//
// Figures are indicative: client and servers share the machine (and, except for the idle
// memory phase, the process). The throughput figures against bare are measured in interleaved
// rounds (-rounds, bare first in each, after the process settled) and each is the median of its
// rounds' ratios. Targets are informative and never fail the command.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/mfaflow/mfaflow/devstack/stack"
	"github.com/mfaflow/mfaflow/events/protocol"
	"github.com/mfaflow/mfaflow/mobile-bridge/companion"
	"github.com/mfaflow/mfaflow/pkg/config"
	"github.com/mfaflow/mfaflow/pkg/totp"
)

var (
	phase     = flag.Duration("d", 2*time.Second, "duration of each throughput phase")
	rounds    = flag.Int("rounds", 3, "rounds of the throughput figures against bare (each figure is the median of its rounds' ratios)")
	workers   = flag.Int("c", 32, "concurrent clients of the throughput phases")
	watched   = flag.Int("watched", 1000, "open SSE streams in the scan-to-SSE phase")
	idleN     = flag.Int("idle", 2000, "idle connections in the memory phase")
	stored    = flag.Int("stored", 10000, "stored enrollments in the idle CPU phase")
	idleWait  = flag.Duration("idle-cpu", 5*time.Second, "idle CPU measuring window")
	only      = flag.String("only", "", "run only the phases whose name contains this (e.g. generator, sign, poll, initiation, enrollment, SSE, memory, CPU)")
	signFirst = flag.Int("signin-first", 1000, "users with a TOTP device on the nearly empty store of the first 1-client sign-in p50")
	signMore  = flag.Int("signin-more", 10000, "users with a TOTP device added before the second 1-client sign-in p50 (and signed in by the 8- and 32-client figures)")
	mdOut     = flag.String("md", "", "also write the table as Markdown to this file")
	svgOut    = flag.String("svg", "", "write a chart of the sign-in figures against bare (SVG) to this file")
	cpuProf   = flag.String("cpuprofile", "", "write a CPU profile of the whole run (client and dev stack share the process) to this file")
	child     = flag.String("child", "", "internal: run as the idle-connection client (sse or ws)")
)

func main() {
	flag.Parse()
	if *child != "" {
		if err := runChild(*child); err != nil {
			fmt.Fprintln(os.Stderr, "bench-load child:", err)
			os.Exit(1)
		}
		return
	}
	start := time.Now()
	if *cpuProf != "" {
		f, err := os.Create(*cpuProf)
		if err == nil {
			err = pprof.StartCPUProfile(f)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench-load: cpuprofile:", err)
			os.Exit(1)
		}
		defer func() { pprof.StopCPUProfile(); _ = f.Close() }()
	}
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "bench-load:", err)
		os.Exit(1)
	}
	fmt.Printf("\ntotal run time %s\n", time.Since(start).Round(time.Second))
}

// ---------------------------------------------------------------- client

var client = &http.Client{
	Transport: &http.Transport{
		Proxy:               nil,
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        4096,
		MaxIdleConnsPerHost: 4096,
		IdleConnTimeout:     90 * time.Second,
	},
	Timeout: 30 * time.Second,
}

// do sends one request and reads the whole answer.
func do(method, url, token string, hdr ...string) (int, http.Header, []byte, error) {
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		return 0, nil, nil, err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, nil, nil, err
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp.StatusCode, resp.Header, body, err
}

type initiation struct {
	ExchangeID struct {
		ExchangeID string `json:"exchange_id"`
	} `json:"exchange_id"`
	StatusID   string `json:"status_id"`
	TOTPSecret string `json:"totp_secret"`
}

func initiate(base, token, qr string) (initiation, error) {
	var in initiation
	st, _, body, err := do(http.MethodPost, base+"/verification-srv/v2/setup/initiate/totp?qr="+qr, token)
	if err != nil {
		return in, err
	}
	if st != http.StatusOK {
		return in, fmt.Errorf("initiate: %d %s", st, body)
	}
	return in, json.Unmarshal(body, &in)
}

// ---------------------------------------------------------------- load loops

type rate struct {
	ok, bad  int64
	perSec   float64
	p50, p99 time.Duration // of the calls fn accepted
	firstEr  string
}

// errStop ends a worker of loop without counting the call: there is no more work (the phase's
// users are used up).
var errStop = errors.New("no more work")

// loop runs fn on n workers for d (or until every worker got errStop), counts the answers fn
// accepts and times each.
func loop(n int, d time.Duration, fn func(w int) error) rate {
	var ok, bad atomic.Int64
	var firstErr atomic.Value
	lat := make([][]time.Duration, n)
	t0 := time.Now()
	deadline := t0.Add(d)
	var wg sync.WaitGroup
	for w := range n {
		wg.Go(func() {
			mine := make([]time.Duration, 0, 4096)
			for start := time.Now(); start.Before(deadline); {
				err := fn(w)
				end := time.Now()
				switch {
				case errors.Is(err, errStop):
					lat[w] = mine
					return
				case err != nil:
					bad.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
				default:
					ok.Add(1)
					mine = append(mine, end.Sub(start))
				}
				start = end
			}
			lat[w] = mine
		})
	}
	wg.Wait()
	el := time.Since(t0).Seconds()
	all := slices.Concat(lat...)
	slices.Sort(all)
	r := rate{ok: ok.Load(), bad: bad.Load(), perSec: float64(ok.Load()) / el, p50: pctSorted(all, 0.5), p99: pctSorted(all, 0.99)}
	if e, _ := firstErr.Load().(string); e != "" {
		r.firstEr = e
	}
	return r
}

// initiateMany starts n enrollments without QR, 16 at a time, counting them in created.
func initiateMany(base, token string, n int, created *atomic.Int64) ([]initiation, error) {
	ins := make([]initiation, n)
	err := parallel(n, 16, func(i int) error {
		var err error
		ins[i], err = initiate(base, token, "none")
		if err == nil {
			created.Add(1)
		}
		return err
	})
	return ins, err
}

// parallel runs fn(i) for i in [0,n) on c workers; it stops at the first error.
func parallel(n, c int, fn func(i int) error) error {
	return parallelW(n, c, func(_, i int) error { return fn(i) })
}

// parallelW is parallel telling fn which of the c workers runs it.
func parallelW(n, c int, fn func(w, i int) error) error {
	var next atomic.Int64
	var firstErr error
	var mu sync.Mutex
	var wg sync.WaitGroup
	for w := range c {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				if err := fn(w, i); err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
					return
				}
			}
		})
	}
	wg.Wait()
	return firstErr
}

func expect(want int) func(int, http.Header, []byte, error) error {
	return func(st int, _ http.Header, body []byte, err error) error {
		if err != nil {
			return err
		}
		if st != want {
			return fmt.Errorf("status %d, want %d: %.200s", st, want, body)
		}
		return nil
	}
}

func pct(ds []time.Duration, p float64) time.Duration {
	return pctSorted(slices.Sorted(slices.Values(ds)), p)
}

func pctSorted(s []time.Duration, p float64) time.Duration {
	if len(s) == 0 {
		return 0
	}
	return s[int(float64(len(s)-1)*p)]
}

// ---------------------------------------------------------------- table

type row struct {
	figure, value, bare, ratio, target string
}

var rows []row

func add(r row) {
	rows = append(rows, r)
	fmt.Fprintf(os.Stderr, "  %-44s %s\n", r.figure, r.value)
}

func section(name string) {
	rows = append(rows, row{figure: "## " + name})
	fmt.Fprintf(os.Stderr, "== %s\n", name)
}

func printTable(out io.Writer) {
	w := [5]int{len("figure"), len("value"), len("bare"), len("ratio"), len("target")}
	for _, r := range rows {
		if strings.HasPrefix(r.figure, "## ") {
			w[0] = max(w[0], len([]rune(r.figure))+1)
			continue
		}
		for i, s := range []string{r.figure, r.value, r.bare, r.ratio, r.target} {
			w[i] = max(w[i], len([]rune(s)))
		}
	}
	pad := func(s string, n int) string { return s + strings.Repeat(" ", max(0, n-len([]rune(s)))) }
	line := func(c [5]string) {
		fmt.Fprintf(out, "| %s | %s | %s | %s | %s |\n", pad(c[0], w[0]), pad(c[1], w[1]), pad(c[2], w[2]), pad(c[3], w[3]), pad(c[4], w[4]))
	}
	fmt.Fprintln(out)
	line([5]string{"figure", "value", "bare", "ratio", "target"})
	line([5]string{strings.Repeat("-", w[0]), strings.Repeat("-", w[1]), strings.Repeat("-", w[2]), strings.Repeat("-", w[3]), strings.Repeat("-", w[4])})
	for _, r := range rows {
		if strings.HasPrefix(r.figure, "## ") {
			line([5]string{"**" + r.figure[3:] + "**", "", "", "", ""})
			continue
		}
		line([5]string{r.figure, r.value, r.bare, r.ratio, r.target})
	}
}

func reqs(r rate) string {
	s := fmt.Sprintf("%.0f req/s", r.perSec)
	if r.bad > 0 {
		s += fmt.Sprintf(" (%d errors)", r.bad)
	}
	return s
}

func judge(ok bool, what string) string {
	if ok {
		return "PASS " + what
	}
	return "MISS " + what
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2f ms", float64(d)/float64(time.Millisecond)) }

// ---------------------------------------------------------------- bare server

var bareBody = []byte(`{"status":"INITIATED","id":"bare","sub":"bench","type":"TOTP","expires_at":"2026-01-01T00:00:00Z","updated_at":"2026-01-01T00:00:00Z"}`)

func startBare() (string, func(), error) {
	mux := http.NewServeMux()
	mux.HandleFunc("/json", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("ETag", `"bare"`)
		_, _ = w.Write(bareBody)
	})
	mux.HandleFunc("/sse", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.Header().Set("Cache-Control", "no-store")
		w.WriteHeader(http.StatusOK)
		_, _ = fmt.Fprintf(w, "event: status\ndata: %s\n\n", bareBody)
		http.NewResponseController(w).Flush()
		t := time.NewTicker(15 * time.Second)
		defer t.Stop()
		for {
			select {
			case <-r.Context().Done():
				return
			case <-t.C:
				_, _ = io.WriteString(w, ": hb\n\n")
				http.NewResponseController(w).Flush()
			}
		}
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	// The label follows every goroutine the server starts, so -cpuprofile can tell bare's CPU
	// from the dev stack's and the load generator's (pprof -tagfocus part=bare).
	go pprof.Do(context.Background(), pprof.Labels("part", "bare"), func(context.Context) { _ = srv.Serve(ln) })
	return "http://" + ln.Addr().String(), func() { _ = srv.Close() }, nil
}

// ---------------------------------------------------------------- run

// startStack starts a dev stack in-process on random loopback ports with its own temporary
// data dir, with the limits that would measure themselves instead of mfaflow lifted. stop
// closes it and removes the dir.
func startStack() (st *stack.Stack, stop func(), err error) {
	dir, err := os.MkdirTemp("", "mfaflow-bench-load-")
	if err != nil {
		return nil, nil, err
	}
	vars := map[string]string{
		"MFA_HTTP_ADDR":          "127.0.0.1:0",
		"MFA_EMBEDDED_NATS_ADDR": "127.0.0.1:0",
		"MFA_DATA_DIR":           dir,
		// One user polls one enrollment far faster than a frontend would: lift the limiter
		// (0 = unlimited) so the figure is the cost of a poll, not of a 429.
		"MFA_POLL_RATE": "0",
		// One token starts every enrollment and sign-in and opens every stream here: lift the
		// per-user limits (0 = off) for the same reason.
		"MFA_USER_START_RATE": "0",
		"MFA_USER_STREAMS":    "0",
		// One companion connection here sends hundreds of frames a second (a phone sends a
		// handful): lift the per-connection frame limit where the stack has one.
		"MFA_BRIDGE_FRAME_RATE":  "100000",
		"MFA_BRIDGE_FRAME_BURST": "10000",
	}
	cfg, err := config.FromEnv(func(k string) string { return vars[k] })
	if err == nil {
		log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
		// Labelled like bare's server: every goroutine of the stack (NATS server included)
		// inherits it (pprof -tagfocus part=stack).
		pprof.Do(context.Background(), pprof.Labels("part", "stack"), func(ctx context.Context) {
			st, err = stack.Start(ctx, cfg, stack.Options{}, log)
		})
	}
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, nil, fmt.Errorf("start dev stack: %w", err)
	}
	return st, func() { st.Close(); _ = os.RemoveAll(dir) }, nil
}

func run() error {
	st, stopStack, err := startStack()
	if err != nil {
		return err
	}
	defer stopStack()
	bare, stopBare, err := startBare()
	if err != nil {
		return err
	}
	defer stopBare()
	base := st.URL()
	fmt.Fprintf(os.Stderr, "dev stack %s, bare %s, GOMAXPROCS %d, MFA_POLL_RATE=0 (poll limiter off), MFA_USER_START_RATE=0 MFA_USER_STREAMS=0 (per-user limits off), MFA_BRIDGE_FRAME_RATE=100000\n", base, bare, runtime.GOMAXPROCS(0))

	token, err := st.Token("bench")
	if err != nil {
		return err
	}
	var created atomic.Int64 // enrollments stored by this run

	phases := []struct {
		name string
		fn   func() error
	}{
		{"load generator (bare)", func() error { return benchGenerator(bare, token) }},
		{"TOTP sign-in (service token: start + verify)", func() error { return benchSignIn(bare) }},
		{"status poll", func() error { return benchPoll(base, bare, token, &created) }},
		{"initiation", func() error { return benchInitiate(base, bare, token, &created) }},
		{"companion enrollment (initiate + scan + enroll)", func() error { return benchEnroll(st, base, &created) }},
		{"scan-to-SSE latency", func() error { return benchScanToSSE(base, token, &created) }},
		{"idle memory", func() error { return benchIdleRSS(base, bare, token, &created) }},
		{"idle CPU", func() error { return benchIdleCPU(base, token, &created) }},
	}
	for _, p := range phases {
		if *only != "" && !strings.Contains(strings.ToLower(p.name), strings.ToLower(*only)) {
			continue
		}
		section(p.name)
		if err := p.fn(); err != nil {
			add(row{figure: p.name, value: "FAILED: " + err.Error()})
		}
		client.CloseIdleConnections()
	}
	printTable(os.Stdout)
	return writeReports()
}

// benchGenerator measures bare with the Go net/http client the benchmark used to drive every
// figure with and with the raw client it drives them with now: the client shares the two cores
// with the server it measures, so a heavier client makes bare look slower.
func benchGenerator(bare, token string) error {
	n := *workers
	rc := newRawClient(bare, n)
	defer rc.close()
	req := rc.request(http.MethodGet, "/json", token, nil)
	settle()
	std := loop(n, *phase, func(int) error { return expect(http.StatusOK)(do(http.MethodGet, bare+"/json", token)) })
	client.CloseIdleConnections()
	settle()
	raw := loop(n, *phase, func(w int) error { return ok(http.StatusOK)(rc.conn(w).do(req)) })
	firstErrors(std, raw)
	add(row{fmt.Sprintf("bare GET /json, Go net/http client (%d clients)", n), reqs(std) + ", p99 " + ms(std.p99), "", "", ""})
	add(row{fmt.Sprintf("bare GET /json, raw keep-alive client (%d clients)", n), reqs(raw) + ", p99 " + ms(raw.p99), reqs(std) + " (net/http)",
		fmt.Sprintf("%.2f×", raw.perSec/std.perSec), judge(raw.perSec > std.perSec, "faster than net/http")})
	return nil
}

func benchPoll(base, bare, token string, created *atomic.Int64) error {
	n := *workers
	ids := make([]string, n)
	etags := make([]string, n)
	if err := parallel(n, 8, func(i int) error {
		in, err := initiate(base, token, "none")
		if err != nil {
			return err
		}
		created.Add(1)
		ids[i] = "/verification-srv/verificationstatus/" + in.StatusID
		s, h, _, err := do(http.MethodGet, base+ids[i], token)
		if err != nil || s != http.StatusOK {
			return fmt.Errorf("first poll: %d %v", s, err)
		}
		etags[i] = h.Get("ETag")
		if etags[i] == "" {
			return fmt.Errorf("poll answer has no ETag")
		}
		return nil
	}); err != nil {
		return err
	}
	bareC, stackC := newRawClient(bare, n), newRawClient(base, n)
	defer bareC.close()
	defer stackC.close()
	bareReq := bareC.request(http.MethodGet, "/json", token, nil)
	polls, conditional := make([][]byte, n), make([][]byte, n)
	for w := range n {
		polls[w] = stackC.request(http.MethodGet, ids[w], token, nil)
		conditional[w] = stackC.request(http.MethodGet, ids[w], token, nil, "If-None-Match", etags[w])
	}
	figs := against(n, func(w int) error { return ok(http.StatusOK)(bareC.conn(w).do(bareReq)) },
		func(w int) error { return ok(http.StatusOK)(stackC.conn(w).do(polls[w])) },
		func(w int) error { return ok(http.StatusNotModified)(stackC.conn(w).do(conditional[w])) })
	for i, name := range []string{fmt.Sprintf("GET status → 200 (%d clients)", n), fmt.Sprintf("GET status If-None-Match → 304 (%d clients)", n)} {
		f := figs[i]
		add(row{name, reqs(f.value), reqs(f.bare), fmt.Sprintf("%.0f %%", 100*f.ratio), judge(f.ratio >= 0.5, "≥ 50 %")})
	}
	return nil
}

// versus is one figure measured against bare: the medians over the rounds of the figure, of
// bare, and of their ratio within each round.
type versus struct {
	value, bare rate
	ratio       float64
}

// against measures bare and then each of figures, in that order, for *rounds rounds on n
// clients of *phase each, and returns each figure's medians. Interleaving the rounds keeps a
// drift of the machine (another process, a frequency change) from landing on one side only;
// before each bare phase the process is let to settle, so that work the dev stack still does
// after a phase (its relay catching up) is not counted against bare.
func against(n int, bareFn func(int) error, figures ...func(int) error) []versus {
	bares := make([]rate, 0, *rounds)
	vals := make([][]rate, len(figures))
	ratios := make([][]float64, len(figures))
	for range max(*rounds, 1) {
		settle()
		b := loop(n, *phase, bareFn)
		bares = append(bares, b)
		for i, fn := range figures {
			r := loop(n, *phase, fn)
			vals[i] = append(vals[i], r)
			ratios[i] = append(ratios[i], r.perSec/b.perSec)
		}
	}
	out := make([]versus, len(figures))
	for i := range figures {
		out[i] = versus{value: medianRate(vals[i]), bare: medianRate(bares), ratio: median(ratios[i])}
		firstErrors(vals[i]...)
	}
	firstErrors(bares...)
	return out
}

func median(xs []float64) float64 {
	s := slices.Sorted(slices.Values(xs))
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// medianRate is the round with the median rate (its counts and first error with it).
func medianRate(rs []rate) rate {
	s := slices.SortedFunc(slices.Values(rs), func(a, b rate) int { return cmpFloat(a.perSec, b.perSec) })
	return s[len(s)/2]
}

func cmpFloat(a, b float64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// settle waits (at most 5 s) until the process used under 5 % of a core for 200 ms: the dev
// stack has finished what the last phase left it (relaying events, freeing memory).
func settle() {
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		c0 := cpuTime()
		time.Sleep(200 * time.Millisecond)
		if cpuTime()-c0 < 10*time.Millisecond {
			return
		}
	}
}

func firstErrors(rs ...rate) error {
	for _, r := range rs {
		if r.firstEr != "" {
			fmt.Fprintln(os.Stderr, "  first error:", r.firstEr)
		}
	}
	return nil
}

func benchInitiate(base, bare, token string, created *atomic.Int64) error {
	n := *workers
	bareC, stackC := newRawClient(bare, n), newRawClient(base, n)
	defer bareC.close()
	defer stackC.close()
	bareReq := bareC.request(http.MethodPost, "/json", token, nil)
	initiateQR := func(qr string) func(int) error {
		req := stackC.request(http.MethodPost, "/verification-srv/v2/setup/initiate/totp?qr="+qr, token, nil)
		return func(w int) error {
			err := ok(http.StatusOK)(stackC.conn(w).do(req))
			if err == nil {
				created.Add(1)
			}
			return err
		}
	}
	figs := against(n, func(w int) error { return ok(http.StatusOK)(bareC.conn(w).do(bareReq)) }, initiateQR("none"), initiateQR("png"))
	for i, f := range []struct {
		qr     string
		target float64
	}{{"none", 0.15}, {"png", 0.08}} {
		v := figs[i]
		add(row{fmt.Sprintf("POST initiate ?qr=%s (%d clients)", f.qr, n), reqs(v.value), reqs(v.bare), fmt.Sprintf("%.1f %%", 100*v.ratio), judge(v.ratio >= f.target, fmt.Sprintf("≥ %.0f %%", 100*f.target))})
	}
	return nil
}

func benchEnroll(st *stack.Stack, base string, created *atomic.Int64) error {
	var p50one time.Duration
	for _, c := range []int{1, 8, 32, 64} {
		phones := make([]*companion.Client, c)
		for i := range c {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			p, err := companion.Dial(ctx, base)
			cancel()
			if err != nil {
				return err
			}
			phones[i] = p
		}
		var mu sync.Mutex
		var lat []time.Duration
		var seq atomic.Int64
		r := loop(c, *phase, func(w int) error {
			// A user per flow: a user's first factor needs no step-up, a second one would.
			tok, err := st.Token(fmt.Sprintf("enroll-%d-%d", c, seq.Add(1)))
			if err != nil {
				return err
			}
			t0 := time.Now()
			in, err := initiate(base, tok, "none")
			if err != nil {
				return err
			}
			created.Add(1)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			dev := protocol.Device{DeviceID: fmt.Sprintf("bench-%d", seq.Add(1)), Name: "bench phone", Platform: "android"}
			if ack, err := phones[w].Scan(ctx, in.ExchangeID.ExchangeID, dev); err != nil || ack.Status != "SCANNED" {
				return fmt.Errorf("scan: %+v %v", ack, err)
			}
			code, err := totp.Code(in.TOTPSecret, time.Now(), totp.Default)
			if err != nil {
				return err
			}
			if ack, err := phones[w].Enroll(ctx, in.ExchangeID.ExchangeID, code); err != nil || ack.Status != "ENROLLED" {
				return fmt.Errorf("enroll: %+v %v", ack, err)
			}
			d := time.Since(t0)
			mu.Lock()
			lat = append(lat, d)
			mu.Unlock()
			return nil
		})
		for _, p := range phones {
			_ = p.Close()
		}
		p50, p99 := pct(lat, 0.5), pct(lat, 0.99)
		target := ""
		if c == 1 {
			p50one = p50
		}
		if c == 32 && p50one > 0 {
			// Little's law: c clients in a closed loop at X flows/s wait c/X on average, so the
			// target needs X ≥ c / (3 × 1-client p50); say where that bound lies for this run.
			need := float64(c) / (3 * p50one.Seconds())
			target = judge(p50 <= 3*p50one, fmt.Sprintf("p50 ≤ 3× 1-client (%.1f×; needs ≥ %.0f flows/s)", float64(p50)/float64(p50one), need))
		}
		v := fmt.Sprintf("%.0f flows/s, p50 %s, p99 %s", r.perSec, ms(p50), ms(p99))
		if r.bad > 0 {
			v += fmt.Sprintf(" (%d errors)", r.bad)
		}
		add(row{fmt.Sprintf("enrollments, %d concurrent clients", c), v, "", "", target})
		firstErrors(r)
	}
	return nil
}

// sseWatch opens an SSE stream and reports on seen the time each status event carrying want
// arrives; ready gets one value once the first status event has been read.
func sseWatch(ctx context.Context, url string, ready chan<- error, want string, seen chan<- time.Time) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := sseClient.Do(req)
	if err != nil {
		ready <- err
		return
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		ready <- fmt.Errorf("SSE status %d", resp.StatusCode)
		return
	}
	sc := bufio.NewScanner(resp.Body)
	first := true
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "data: ") {
			continue
		}
		if first {
			first = false
			ready <- nil
		}
		if want != "" && strings.Contains(line, `"status":"`+want+`"`) {
			seen <- time.Now()
			want = ""
		}
	}
}

// sseClient has no overall timeout: streams stay open.
var sseClient = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 16, DisableCompression: true}}

func benchScanToSSE(base, token string, created *atomic.Int64) error {
	n := *watched
	ins, err := initiateMany(base, token, n, created)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ready := make(chan error, n)
	seen := make([]chan time.Time, n)
	for i := range n {
		seen[i] = make(chan time.Time, 1)
		go sseWatch(ctx, base+"/verification-srv/verificationstatus/"+ins[i].StatusID+"/events?access_token="+token, ready, "SCANNED", seen[i])
	}
	for range n {
		if err := <-ready; err != nil {
			return fmt.Errorf("open SSE: %w", err)
		}
	}
	dctx, dcancel := context.WithTimeout(context.Background(), 10*time.Second)
	phone, err := companion.Dial(dctx, base)
	dcancel()
	if err != nil {
		return err
	}
	defer phone.Close()
	lat := make([]time.Duration, 0, n)
	for i := range n {
		sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
		t0 := time.Now()
		_, err := phone.Scan(sctx, ins[i].ExchangeID.ExchangeID, protocol.Device{DeviceID: fmt.Sprintf("sse-%d", i)})
		scancel()
		if err != nil {
			return fmt.Errorf("scan: %w", err)
		}
		select {
		case t := <-seen[i]:
			lat = append(lat, t.Sub(t0))
		case <-time.After(10 * time.Second):
			return fmt.Errorf("SSE %d saw no SCANNED within 10s", i)
		}
	}
	p99 := pct(lat, 0.99)
	add(row{fmt.Sprintf("scan → SSE SCANNED, %d open streams", n), fmt.Sprintf("p50 %s, p99 %s", ms(pct(lat, 0.5)), ms(p99)), "", "", judge(p99 <= 5*time.Millisecond, "p99 ≤ 5 ms")})
	return nil
}

// ---------------------------------------------------------------- idle memory

func vmRSS() int64 {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for l := range strings.SplitSeq(string(data), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb * 1024
		}
	}
	return 0
}

// settledRSS is VmRSS after garbage collection has returned what it can to the OS, so that
// garbage of earlier phases does not leave with the connections measured.
func settledRSS() int64 {
	var last int64
	for range 4 {
		runtime.GC()
		debug.FreeOSMemory()
		time.Sleep(300 * time.Millisecond)
		last = vmRSS()
	}
	return last
}

// idleCost opens len(urls) idle connections from a child process (so the client's memory is
// not counted) and returns the server-side RSS growth per connection.
func idleCost(mode string, urls []string) (float64, error) {
	exe, err := os.Executable()
	if err != nil {
		return 0, err
	}
	before := settledRSS()
	cmd := exec.Command(exe, "-child", mode)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return 0, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return 0, err
	}
	if err := cmd.Start(); err != nil {
		return 0, err
	}
	defer func() {
		_ = stdin.Close() // the child exits on EOF
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		time.Sleep(500 * time.Millisecond) // let the server see the connections go
	}()
	bw := bufio.NewWriter(stdin)
	for _, u := range urls {
		fmt.Fprintln(bw, u)
	}
	fmt.Fprintln(bw, "go")
	if err := bw.Flush(); err != nil {
		return 0, err
	}
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		return 0, fmt.Errorf("child: %w", err)
	}
	if strings.TrimSpace(line) != "ready" {
		return 0, fmt.Errorf("child: %s", line)
	}
	time.Sleep(500 * time.Millisecond)
	after := settledRSS()
	return float64(after-before) / float64(len(urls)), nil
}

func runChild(mode string) error {
	sc := bufio.NewScanner(os.Stdin)
	var urls []string
	for sc.Scan() {
		if sc.Text() == "go" {
			break
		}
		urls = append(urls, sc.Text())
	}
	ctx := context.Background()
	errs := make(chan error, len(urls))
	var keep []io.Closer
	var mu sync.Mutex
	sem := make(chan struct{}, 64)
	for _, u := range urls {
		sem <- struct{}{}
		go func() {
			defer func() { <-sem }()
			switch mode {
			case "sse":
				ready := make(chan error, 1)
				go sseWatch(ctx, u, ready, "", nil)
				errs <- <-ready
			case "ws":
				dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				defer cancel()
				c, err := companion.Dial(dctx, u)
				if err == nil {
					mu.Lock()
					keep = append(keep, c)
					mu.Unlock()
				}
				errs <- err
			default:
				errs <- fmt.Errorf("unknown mode %q", mode)
			}
		}()
	}
	for range urls {
		if err := <-errs; err != nil {
			return err
		}
	}
	fmt.Println("ready")
	_, _ = io.Copy(io.Discard, os.Stdin) // wait for the parent to close stdin
	for _, c := range keep {
		_ = c.Close()
	}
	return nil
}

func benchIdleRSS(base, bare, token string, created *atomic.Int64) error {
	n := *idleN
	ins, err := initiateMany(base, token, n, created)
	if err != nil {
		return err
	}
	client.CloseIdleConnections()
	bareURLs := make([]string, n)
	stackURLs := make([]string, n)
	wsURLs := make([]string, n)
	for i := range n {
		bareURLs[i] = bare + "/sse"
		stackURLs[i] = base + "/verification-srv/verificationstatus/" + ins[i].StatusID + "/events?access_token=" + token
		wsURLs[i] = base
	}
	bareSSE, err := idleCost("sse", bareURLs)
	if err != nil {
		return fmt.Errorf("bare SSE: %w", err)
	}
	stackSSE, err := idleCost("sse", stackURLs)
	if err != nil {
		return fmt.Errorf("status SSE: %w", err)
	}
	add(row{fmt.Sprintf("RSS per idle SSE subscriber (N=%d)", n), kib(stackSSE), kib(bareSSE), fmt.Sprintf("%.1f×", stackSSE/bareSSE), ""})
	bridgeWS, err := idleCost("ws", wsURLs)
	if err != nil {
		return fmt.Errorf("bridge: %w", err)
	}
	add(row{fmt.Sprintf("RSS per idle bridge websocket (N=%d)", n), kib(bridgeWS), kib(bareSSE) + " (SSE)", fmt.Sprintf("%.1f×", bridgeWS/bareSSE), ""})
	return nil
}

func kib(b float64) string { return fmt.Sprintf("%.1f KiB", b/1024) }

// ---------------------------------------------------------------- idle CPU

func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func benchIdleCPU(base, token string, created *atomic.Int64) error {
	missing := *stored - int(created.Load())
	t0 := time.Now()
	if missing > 0 {
		if err := parallel(missing, 16, func(int) error {
			_, err := initiate(base, token, "none")
			if err == nil {
				created.Add(1)
			}
			return err
		}); err != nil {
			return err
		}
	}
	fmt.Fprintf(os.Stderr, "  created %d more enrollments in %s (%d in all)\n", max(0, missing), time.Since(t0).Round(time.Millisecond), created.Load())
	client.CloseIdleConnections()
	runtime.GC()
	time.Sleep(time.Second)
	c0, w0 := cpuTime(), time.Now()
	time.Sleep(*idleWait)
	used, wall := cpuTime()-c0, time.Since(w0)
	add(row{fmt.Sprintf("idle CPU, %d stored enrollments, %s window", created.Load(), idleWait.Round(time.Second)),
		fmt.Sprintf("%.2f %% of a core (%s CPU)", 100*used.Seconds()/wall.Seconds(), used.Round(time.Millisecond)), "", "", ""})
	return nil
}
