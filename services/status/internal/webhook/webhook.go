// Package webhook wakes companion apps that are in the background: for each challenge sent to
// a device that has no open connection, it POSTs a small signed JSON body to the operator's URL
// (MFA_PUSH_WEBHOOK_URL). An adapter outside mfaflow turns that into an APNs, FCM or
// UnifiedPush message; the app then connects and fetches the challenge itself, so the body
// carries only identifiers and the expiry — never the number to match or the sign-in context.
//
// # Request
//
//	POST <URL>
//	Content-Type: application/json
//	X-Mfaflow-Timestamp: 1767225600
//	X-Mfaflow-Signature: v1=<hex HMAC-SHA256(secret, timestamp + "." + body)>
//	X-Mfaflow-Delivery: <id, the same on every retry of one wake-up>
//
//	{"ph_id":"…","challenge_id":"…","expires_at":"2026-01-01T00:05:00Z"}
//
// # Verifying on the receiver
//
// Read the raw body (before any JSON decoding), compute HMAC-SHA256 with the shared secret over
// the timestamp header, a ".", and the body; hex-encode it and compare it with the part after
// "v1=" in constant time. Reject a timestamp more than a few minutes from your clock (a replayed
// request is then useless), and drop a delivery id seen before (a retry after a lost response).
// [Verify] does all but the dedupe.
//
// # Delivery
//
// Notify only enqueues; a few workers deliver. Network errors, 429 and 5xx are retried with
// doubling back-off up to Config.MaxAttempts; other statuses are final. Nothing is sent once the
// challenge has expired — a wake-up for it would only show the user a dead prompt. Redirects are
// not followed by the default client. Logs name the URL's host only: a path or query may hold a
// token of the adapter.
package webhook

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/mfaflow/mfaflow/pkg/webhooksig"
)

// Header names of a wake-up request: pkg/webhooksig's, which the notifier's SMS webhook signs
// with too.
const (
	HeaderTimestamp = webhooksig.HeaderTimestamp
	HeaderSignature = webhooksig.HeaderSignature
	HeaderDelivery  = webhooksig.HeaderDelivery
)

// Defaults of Config's zero values.
const (
	DefaultTimeout     = 5 * time.Second
	DefaultMaxAttempts = 5
	DefaultBackoff     = 500 * time.Millisecond
	MaxBackoff         = 30 * time.Second
	DefaultQueueSize   = 1024
)

// workers deliver at once; wake-ups are small and an adapter answers fast, so a few suffice and
// one slow receiver cannot take more than that many goroutines.
const workers = 4

// Errors of Verify.
var (
	ErrSignature = webhooksig.ErrSignature
	ErrTimestamp = webhooksig.ErrTimestamp
)

// Config configures a Notifier.
type Config struct {
	URL    string // where wake-ups are POSTed; empty means New returns nil (wake-ups off)
	Secret []byte // HMAC key shared with the receiver
	// Client sends the requests; nil means a client with a 5 s timeout that follows no redirects.
	Client *http.Client
	// MaxAttempts bounds the attempts per wake-up, the first included; 0 means 5.
	MaxAttempts int
	// Backoff is the wait after the first failed attempt, doubling after each further one up to
	// 30 s; 0 means 500 ms.
	Backoff time.Duration
	// QueueSize bounds the wake-ups waiting for a worker; 0 means 1024.
	QueueSize int
	// Now is the clock that stamps requests and decides expiry; nil means time.Now.
	Now func() time.Time
}

// WakeUp is one challenge to a device that is not connected.
type WakeUp struct {
	PHID        string
	ChallengeID string
	ExpiresAt   time.Time
}

// Notifier delivers wake-ups in the background. A nil *Notifier is valid and does nothing, so
// callers need not check whether a URL is configured.
type Notifier struct {
	cfg    Config
	log    *slog.Logger
	queue  chan job
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	once   sync.Once
}

type job struct {
	WakeUp
	delivery string
}

// payload is the request body: the contract with adapters, kept apart from WakeUp.
type payload struct {
	PHID        string `json:"ph_id"`
	ChallengeID string `json:"challenge_id"`
	ExpiresAt   string `json:"expires_at"`
}

func toPayload(w WakeUp) payload {
	return payload{PHID: w.PHID, ChallengeID: w.ChallengeID, ExpiresAt: w.ExpiresAt.UTC().Format(time.RFC3339)}
}

// New starts the workers. It returns nil — a Notifier that does nothing — when cfg.URL is empty,
// or, logging an error, when it is not an absolute http(s) URL (config validates it first).
func New(cfg Config, log *slog.Logger) *Notifier {
	if log == nil {
		log = slog.Default()
	}
	if cfg.URL == "" {
		return nil
	}
	u, err := url.Parse(cfg.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		log.Error("webhook: URL is not an absolute http(s) URL; wake-ups are off")
		return nil
	}
	if cfg.Client == nil {
		cfg.Client = &http.Client{
			Timeout: DefaultTimeout,
			// A redirect is the receiver's mistake; following it would send signed wake-ups
			// somewhere the operator did not configure.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		}
	}
	if cfg.MaxAttempts <= 0 {
		cfg.MaxAttempts = DefaultMaxAttempts
	}
	if cfg.Backoff <= 0 {
		cfg.Backoff = DefaultBackoff
	}
	if cfg.QueueSize <= 0 {
		cfg.QueueSize = DefaultQueueSize
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	ctx, cancel := context.WithCancel(context.Background())
	n := &Notifier{
		cfg: cfg, log: log.With("webhook_host", u.Host),
		queue: make(chan job, cfg.QueueSize), ctx: ctx, cancel: cancel,
	}
	for range workers {
		n.wg.Go(n.work)
	}
	return n
}

// Notify enqueues a wake-up without blocking. It returns false, and logs a warning, when the
// queue is full; false also when n is nil or closed.
func (n *Notifier) Notify(w WakeUp) bool {
	if n == nil || n.ctx.Err() != nil {
		return false
	}
	select {
	case n.queue <- job{WakeUp: w, delivery: rand.Text()}:
		return true
	default:
		n.log.Warn("webhook: queue full, wake-up dropped", "challenge_id", w.ChallengeID, "queue_size", n.cfg.QueueSize)
		return false
	}
}

// Close stops the workers and waits for them. Queued wake-ups are dropped; a request in flight
// is cancelled. Close is safe to call more than once, and on nil.
func (n *Notifier) Close() {
	if n == nil {
		return
	}
	n.once.Do(func() {
		n.cancel()
		n.wg.Wait()
	})
}

func (n *Notifier) work() {
	for {
		select {
		case <-n.ctx.Done():
			return
		case j := <-n.queue:
			n.deliver(j)
		}
	}
}

// deliver sends one wake-up, retrying while it is worth it.
func (n *Notifier) deliver(j job) {
	body, err := json.Marshal(toPayload(j.WakeUp))
	if err != nil { // strings and a formatted time: cannot happen
		n.log.Error("webhook: encode wake-up", "err", err)
		return
	}
	log := n.log.With("delivery", j.delivery, "challenge_id", j.ChallengeID)
	wait := n.cfg.Backoff
	for attempt := 1; ; attempt++ {
		left := j.ExpiresAt.Sub(n.cfg.Now())
		if left <= 0 {
			log.Info("webhook: challenge expired, wake-up not delivered", "attempts", attempt-1)
			return
		}
		retry, reason := n.send(j.delivery, body, left)
		if reason == "" {
			log.Debug("webhook: wake-up delivered", "attempts", attempt)
			return
		}
		if !retry || attempt >= n.cfg.MaxAttempts {
			log.Warn("webhook: wake-up not delivered", "attempts", attempt, "reason", reason, "final", !retry)
			return
		}
		if n.cfg.Now().Add(wait).After(j.ExpiresAt) {
			log.Info("webhook: challenge expires before the next attempt, wake-up not delivered", "attempts", attempt, "reason", reason)
			return
		}
		log.Debug("webhook: attempt failed, retrying", "attempt", attempt, "reason", reason, "backoff", wait)
		t := time.NewTimer(wait)
		select {
		case <-n.ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		wait = min(2*wait, MaxBackoff)
	}
}

// send makes one attempt, bounded by the challenge's remaining life. reason is empty on
// success; retry says whether another attempt may succeed.
func (n *Notifier) send(delivery string, body []byte, left time.Duration) (retry bool, reason string) {
	ctx, cancel := context.WithTimeout(n.ctx, left)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, n.cfg.URL, bytes.NewReader(body))
	if err != nil {
		return false, "build request"
	}
	req.Header.Set("Content-Type", "application/json")
	webhooksig.SetHeaders(req.Header, n.cfg.Secret, delivery, n.cfg.Now(), body)
	resp, err := n.cfg.Client.Do(req)
	if err != nil {
		// *url.Error repeats the whole URL, query included: keep only the cause.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return true, err.Error()
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10)) // lets the connection be reused
	_ = resp.Body.Close()
	switch {
	case resp.StatusCode >= 200 && resp.StatusCode < 300:
		return false, ""
	case resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500:
		return true, "status " + strconv.Itoa(resp.StatusCode)
	default:
		return false, "status " + strconv.Itoa(resp.StatusCode)
	}
}

// Sign and Verify are pkg/webhooksig's: one signature scheme for every webhook mfaflow sends.
var (
	Sign   = webhooksig.Sign
	Verify = webhooksig.Verify
)
