// Package httpx is mfaflow's HTTP plumbing on net/http: RFC 9457 problem responses with stable
// codes, bounded JSON bodies, and a router whose unknown routes and wrong methods also answer
// problem+json instead of net/http's plain text.
package httpx

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"syscall"

	"github.com/mfaflow/mfaflow/pkg/fault"
	"github.com/mfaflow/mfaflow/pkg/metrics"
	"github.com/mfaflow/mfaflow/pkg/natsx"
)

// MaxBodyBytes bounds every request body (1 MiB).
const MaxBodyBytes = 1 << 20

// ProblemType is the base of the `type` URI of every problem; the code is appended.
const ProblemType = "https://mfaflow.dev/problems/"

// Problem is an RFC 9457 problem details body with mfaflow's stable `code` extension.
type Problem struct {
	Type     string `json:"type"`
	Title    string `json:"title"`
	Status   int    `json:"status"`
	Detail   string `json:"detail,omitempty"`
	Instance string `json:"instance,omitempty"`
	Code     string `json:"code"`
}

// WriteProblem answers with fe as application/problem+json.
func WriteProblem(w http.ResponseWriter, r *http.Request, fe *fault.Error) {
	status := fe.Code.Status()
	p := Problem{
		Type:     ProblemType + string(fe.Code),
		Title:    http.StatusText(status),
		Status:   status,
		Detail:   fe.Message,
		Instance: r.URL.Path,
		Code:     string(fe.Code),
	}
	h := w.Header()
	h.Set("Content-Type", "application/problem+json")
	h.Set("Cache-Control", "no-store")
	if fe.Code == fault.Unauthorized {
		h.Set("WWW-Authenticate", `Bearer realm="mfaflow"`)
	}
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(p)
}

// WriteError maps err to a problem. Errors that are not *fault.Error are logged (once, here) and
// answered as a bare 500 so no internal text reaches the client. A failure that only happened
// because the client went away (it cancelled the request or closed the connection) is no
// server fault: it is logged at debug level, not as an error or warning.
func WriteError(w http.ResponseWriter, r *http.Request, log *slog.Logger, err error) {
	fe := fault.From(err)
	if fe.Code == fault.Internal && (natsx.IsTransient(err) || errors.Is(err, fault.ErrTransient)) {
		// A store with a node down, a leader being elected or a lost connection: retry, not a bug.
		fe = fault.New(fault.Unavailable, "a backing service did not answer; try again")
	}
	if fe.Code == fault.Internal || fe.Code == fault.Unavailable {
		switch {
		case ClientGone(r, err):
			log.Debug("client went away", "method", r.Method, "path", r.URL.Path, "err", err)
		case fe.Code == fault.Internal:
			log.Error("request failed", "method", r.Method, "path", r.URL.Path, "err", err)
		default:
			log.Warn("backing service unavailable", "method", r.Method, "path", r.URL.Path, "err", err)
		}
	}
	WriteProblem(w, r, fe)
}

// ClientGone reports whether err is explained by the client having gone away: the request's
// context was cancelled (the client disconnected or gave up), or err is a broken pipe, a reset
// connection or a closed network connection.
func ClientGone(r *http.Request, err error) bool {
	if r != nil && errors.Is(r.Context().Err(), context.Canceled) {
		return true
	}
	return errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, net.ErrClosed)
}

// WriteJSON answers with v as JSON and the given status. Responses are per-user and change
// often, so nothing may be cached.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	// URIs (otpauth, data:) stay readable: no \u0026 for '&'. JSON is never embedded in HTML here.
	enc.SetEscapeHTML(false)
	_ = enc.Encode(v)
}

// DecodeJSON reads a JSON body of at most MaxBodyBytes into v. The Content-Type is not
// checked (curl -d sends a form type by default); the body must simply be JSON. An empty body is allowed when
// optional is true (v keeps its zero value). Errors are *fault.Error ready for WriteProblem.
func DecodeJSON(w http.ResponseWriter, r *http.Request, v any, optional bool) error {
	body := http.MaxBytesReader(w, r.Body, MaxBodyBytes)
	data, err := io.ReadAll(body)
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return fault.New(fault.PayloadTooLarge, "request body exceeds 1 MiB")
		}
		return fault.New(fault.BadRequest, "could not read request body")
	}
	if len(strings.TrimSpace(string(data))) == 0 {
		if optional {
			return nil
		}
		return fault.New(fault.BadRequest, "request body is required")
	}
	if err := json.Unmarshal(data, v); err != nil {
		var ute *json.UnmarshalTypeError
		if errors.As(err, &ute) && ute.Field != "" {
			return fault.New(fault.BadRequest, "field "+ute.Field+" has the wrong type")
		}
		return fault.New(fault.BadRequest, "request body is not valid JSON")
	}
	return nil
}

// Router is an http.ServeMux whose routes answer problem+json for a wrong method (405 with
// Allow) and whose unmatched paths answer a not_found problem.
type Router struct {
	mux     *http.ServeMux
	handler http.Handler // mux, instrumented
	mu      sync.Mutex
	methods map[string][]string // path pattern -> allowed methods
}

// NewRouter returns an empty router.
func NewRouter() *Router {
	rt := &Router{mux: http.NewServeMux(), methods: map[string][]string{}}
	rt.handler = metrics.Instrument(rt.mux)
	rt.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		WriteProblem(w, r, fault.New(fault.NotFound, "no such route"))
	})
	return rt
}

// Handle registers h for pattern "METHOD /path". The first route on a path also registers a
// method-less fallback on it that answers 405 unsupported_method.
func (rt *Router) Handle(pattern string, h http.Handler) {
	method, path, ok := strings.Cut(pattern, " ")
	if !ok {
		panic("httpx: route pattern needs a method: " + pattern)
	}
	rt.mux.Handle(pattern, h)
	rt.mu.Lock()
	defer rt.mu.Unlock()
	first := len(rt.methods[path]) == 0
	rt.methods[path] = append(rt.methods[path], method)
	if method == http.MethodGet {
		rt.methods[path] = append(rt.methods[path], http.MethodHead)
	}
	if first {
		rt.mux.HandleFunc(path, func(w http.ResponseWriter, r *http.Request) {
			rt.mu.Lock()
			allowed := slices.Clone(rt.methods[path])
			rt.mu.Unlock()
			w.Header().Set("Allow", strings.Join(allowed, ", "))
			WriteProblem(w, r, fault.New(fault.UnsupportedMethod, r.Method+" is not supported on this route"))
		})
	}
}

// HandleFunc is Handle for a function.
func (rt *Router) HandleFunc(pattern string, h http.HandlerFunc) { rt.Handle(pattern, h) }

// ServeHTTP dispatches to the registered routes.
// Every request is counted and timed by route pattern (package metrics).
func (rt *Router) ServeHTTP(w http.ResponseWriter, r *http.Request) { rt.handler.ServeHTTP(w, r) }
