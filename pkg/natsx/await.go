package natsx

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// attemptTimeout bounds one attempt of AwaitJetStream. A server of a cluster that has no meta
// leader yet stays silent on most API requests for its first seconds (it answers "JetStream
// system temporarily unavailable" only later), so an attempt that waited on the whole start-up
// context would spend it on one unanswered request instead of asking again.
var attemptTimeout = 5 * time.Second

// Back-off between attempts: doubling from firstRetryWait up to maxRetryWait.
const (
	firstRetryWait = 100 * time.Millisecond
	maxRetryWait   = 2 * time.Second
)

// AwaitJetStream runs f, which creates or looks up the JetStream asset named by what ("kv bucket
// mfa_enrollments"), until it succeeds, fails for a reason waiting cannot cure, or ctx (the
// start-up context) ends. Each attempt gets a context of its own, bounded by ctx and a few
// seconds. Waiting cures what a cluster answers while it forms or right after a peer changed it
// (RetryableAtStart): no meta leader, a stream a peer has just created that this node does not
// know yet, no responders, timeouts. A bad configuration, a permissions violation or an
// incompatible existing stream fails at once. log receives a warning on the first retry and
// every tenth; when ctx ends, the error says what was awaited, for how long, and the last answer.
// It is the one retry loop for start-up: every service's stream, bucket and consumer go through it.
func AwaitJetStream(ctx context.Context, js jetstream.JetStream, log *slog.Logger, what string, f func(ctx context.Context) error) error {
	if log == nil {
		log = slog.Default()
	}
	began := time.Now()
	wait := firstRetryWait
	var last error // the last answer that was not merely an attempt running out of time
	for attempt := 1; ; attempt++ {
		actx, cancel := context.WithTimeout(ctx, attemptTimeout)
		err := f(actx)
		cancel()
		if err == nil {
			return nil
		}
		if denied := jsPermissionViolation(js); denied != nil && isTimeout(err) {
			// The server refused the request's publish and nobody could answer it.
			err = fmt.Errorf("%w (%v)", denied, err)
		}
		if !RetryableAtStart(err) {
			return err
		}
		if last == nil || !isTimeout(err) {
			last = err
		}
		if ctx.Err() != nil {
			return gaveUp(what, began, attempt, last)
		}
		if attempt == 1 || attempt%10 == 0 {
			log.Warn("JetStream not ready at start-up; retrying", "what", what, "attempt", attempt, "err", err)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return gaveUp(what, began, attempt, last)
		case <-t.C:
		}
		wait = min(2*wait, maxRetryWait)
	}
}

func gaveUp(what string, began time.Time, attempts int, last error) error {
	return fmt.Errorf("waited %v (attempts: %d) for JetStream to provide %s; last answer: %w",
		time.Since(began).Round(time.Millisecond), attempts, what, last)
}

func isTimeout(err error) bool {
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout)
}

// jsPermissionViolation is the connection's last error when it is the server refusing a publish
// to the JetStream API: such a request is never answered, and looks like a timeout otherwise.
func jsPermissionViolation(js jetstream.JetStream) error {
	nc := js.Conn()
	if nc == nil {
		return nil
	}
	err := nc.LastError()
	if err == nil || !errors.Is(err, nats.ErrPermissionViolation) {
		return nil
	}
	if !strings.Contains(strings.ToUpper(err.Error()), "$JS.") {
		return nil
	}
	return err
}

// JetStream API error codes (nats-server's errors.json) that RetryableAtStart decides on.
const (
	errCodeClusterNoPeers   = 10005 // "no suitable peers for placement": a forming cluster
	errCodeClusterNotLeader = 10009 // "JetStream cluster can not handle request"
	errCodeNoAccount        = 10035
	errCodeClusterRequired  = 10010
	errCodeClusterUnsupport = 10036
	errCodeStreamOffline    = 10118
)

// RetryableAtStart reports whether err, answered while a service creates or looks up its
// streams, buckets and consumers, may go away by itself: everything IsTransient says, plus what a
// cluster answers while it forms or right after a peer created the asset — stream not found
// (10059) or bucket not found from a node that has not applied the creation yet, no suitable
// peers for placement while peers are still joining, not leader, stream offline. An account
// without JetStream, a permissions violation, an invalid or incompatible configuration, or a
// replicated stream on a single server are answers waiting does not change.
func RetryableAtStart(err error) bool {
	if err == nil || errors.Is(err, nats.ErrPermissionViolation) {
		return false
	}
	if errors.Is(err, jetstream.ErrStreamNotFound) || errors.Is(err, jetstream.ErrBucketNotFound) {
		return true
	}
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		switch apiErr.ErrorCode {
		case errCodeClusterNoPeers, errCodeClusterNotLeader, errCodeStreamOffline:
			return true
		case jetstream.JSErrCodeJetStreamNotEnabledForAccount, jetstream.JSErrCodeJetStreamNotEnabled,
			errCodeNoAccount, errCodeClusterRequired, errCodeClusterUnsupport:
			// 503s, but the server's or account's configuration: no JetStream for us.
			return false
		}
	}
	return IsTransient(err)
}
