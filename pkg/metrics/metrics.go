// Package metrics holds mfaflow's Prometheus metrics, in the process's default registry, and the
// handler that serves them at /metrics.
//
// Every service of a process reports into the same metrics (the dev stack runs all of them in
// one): HTTP by route pattern, NATS commands by subject, the outbox by bucket, so the labels say
// which service a figure belongs to. Metrics are package variables updated with Inc/Dec/Observe,
// never callbacks, so starting several replicas of a service in one process (tests) registers
// nothing twice.
package metrics

import (
	"bufio"
	"errors"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

var (
	// HTTPRequests counts HTTP requests by route pattern ("METHOD /path/{param}", or
	// "unmatched"), method and status code.
	HTTPRequests = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "mfa_http_requests_total", Help: "HTTP requests by route pattern, method and status code.",
	}, []string{"route", "method", "code"})
	// HTTPDuration is the time to answer, by route pattern. Live routes (SSE, websockets)
	// count their whole life.
	HTTPDuration = promauto.NewHistogramVec(prometheus.HistogramOpts{
		Name: "mfa_http_request_duration_seconds", Help: "Time to answer an HTTP request, by route pattern (live streams: their whole life).",
		Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 5, 30, 300},
	}, []string{"route"})
	// Commands counts NATS commands handled, by subject and outcome ("ok" or the fault code).
	Commands = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "mfa_nats_commands_total", Help: "NATS commands handled, by subject and outcome (ok or the fault code).",
	}, []string{"subject", "outcome"})
	// CommandDuration is the time to handle a NATS command, by subject.
	CommandDuration = promauto.NewHistogramVec(prometheus.HistogramOpts{
		Name: "mfa_nats_command_duration_seconds", Help: "Time to handle a NATS command, by subject.",
		Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .5, 1, 5},
	}, []string{"subject"})
	// OutboxPending is the number of documents with events not yet on MFA_EVENTS, by bucket.
	OutboxPending = promauto.NewGaugeVec(prometheus.GaugeOpts{
		Name: "mfa_outbox_pending_documents", Help: "Documents whose events are not yet on the event stream, by bucket (or collection).",
	}, []string{"store"})
	// OutboxRelayed counts events the relays published, by store.
	OutboxRelayed = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "mfa_outbox_relayed_events_total", Help: "Events the outbox relays published to the event stream, by bucket (or collection).",
	}, []string{"store"})
	// RelayLag is the time from an event's write to its publication.
	RelayLag = promauto.NewHistogramVec(prometheus.HistogramOpts{
		Name: "mfa_outbox_relay_lag_seconds", Help: "Time from an event's write to its publication on the event stream.",
		Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 10, 60},
	}, []string{"store"})
	// LiveSubscribers is the number of open live status streams (SSE and websocket).
	LiveSubscribers = promauto.NewGauge(prometheus.GaugeOpts{
		Name: "mfa_live_subscribers", Help: "Open live status streams (SSE and websocket).",
	})
	// BridgeConnections is the number of open companion websocket connections.
	BridgeConnections = promauto.NewGauge(prometheus.GaugeOpts{
		Name: "mfa_bridge_connections", Help: "Open companion websocket connections.",
	})
	// BridgeSessions is the number of logged-in push device sessions.
	BridgeSessions = promauto.NewGauge(prometheus.GaugeOpts{
		Name: "mfa_bridge_device_sessions", Help: "Logged-in push device sessions on the bridge.",
	})
	// Transitions counts status-object writes by kind (enrollment, authentication), method and
	// the state entered: enrollments and authentications by outcome.
	Transitions = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "mfa_status_transitions_total", Help: "Enrollments and authentications entering a state, by kind, method and state.",
	}, []string{"kind", "method", "state"})
	// FactorChecks counts sign-in factor checks by method and result (ok, invalid_code,
	// code_replayed, locked, …); result "locked" includes the check that locked the user.
	FactorChecks = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "mfa_factor_checks_total", Help: "Sign-in factor checks by method and result.",
	}, []string{"method", "result"})
	// Deliveries counts the notifier's delivery attempts by channel (email, sms) and outcome:
	// sent, retried (a temporary failure, tried again later) or failed (given up: expired,
	// rejected or unreadable).
	Deliveries = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "mfa_notifier_deliveries_total", Help: "Notifier delivery attempts by channel and outcome (sent, retried, failed).",
	}, []string{"channel", "outcome"})
)

// Handler serves the metrics in the Prometheus text format.
func Handler() http.Handler { return promhttp.Handler() }

// Instrument wraps h so every request is counted by route pattern, method and status code and
// timed. The pattern is the one net/http's ServeMux matched (r.Pattern), known once h returns.
func Instrument(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w}
		h.ServeHTTP(sw, r)
		route := r.Pattern
		if route == "" || route == "/" {
			route = "unmatched"
		}
		code := sw.code
		if code == 0 {
			code = http.StatusOK
		}
		HTTPRequests.WithLabelValues(route, r.Method, codeLabel(code)).Inc()
		HTTPDuration.WithLabelValues(route).Observe(time.Since(start).Seconds())
	})
}

func codeLabel(code int) string {
	if code == http.StatusSwitchingProtocols {
		return "101"
	}
	var b [3]byte
	b[0], b[1], b[2] = byte('0'+code/100%10), byte('0'+code/10%10), byte('0'+code%10)
	return string(b[:])
}

// statusWriter remembers the status code; it passes flushes and hijacks on, so SSE and
// websockets work through it.
type statusWriter struct {
	http.ResponseWriter
	code int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.code == 0 {
		w.code = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// Flush implements http.Flusher.
func (w *statusWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Hijack implements http.Hijacker (websocket upgrades).
func (w *statusWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	h, ok := w.ResponseWriter.(http.Hijacker)
	if !ok {
		return nil, nil, errors.New("metrics: the response writer cannot be hijacked")
	}
	if w.code == 0 {
		w.code = http.StatusSwitchingProtocols
	}
	return h.Hijack()
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
