package natsx_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mfaflow/mfaflow/events"
	"github.com/mfaflow/mfaflow/pkg/natstest"
	"github.com/mfaflow/mfaflow/pkg/natsx"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// apiProxy is a JetStream API in front of a real server: requests to its prefix go on to
// $JS.API, except those answer picks, which it answers itself (or drops, with an empty answer).
// It shows a service what a cluster answers while it forms or just after a peer created a stream.
type apiProxy struct {
	mu     sync.Mutex
	answer func(api string) (reply []byte, intercept bool)
	seen   []string
}

const proxyPrefix = "proxy.api."

func startProxy(t *testing.T, nc *nats.Conn, answer func(api string) ([]byte, bool)) (*apiProxy, jetstream.JetStream) {
	t.Helper()
	p := &apiProxy{answer: answer}
	sub, err := nc.Subscribe(proxyPrefix+">", func(m *nats.Msg) {
		api := strings.TrimPrefix(m.Subject, proxyPrefix)
		p.mu.Lock()
		p.seen = append(p.seen, api)
		reply, intercept := p.answer(api)
		p.mu.Unlock()
		if intercept {
			if reply != nil {
				_ = m.Respond(reply)
			}
			return
		}
		resp, err := nc.Request("$JS.API."+api, m.Data, 5*time.Second)
		if err != nil {
			return
		}
		_ = m.Respond(resp.Data)
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	// The client on its own connection: the proxy's handler must not wait on its own reads.
	js, err := jetstream.NewWithAPIPrefix(connect(t, nc.ConnectedUrl()), proxyPrefix)
	if err != nil {
		t.Fatal(err)
	}
	return p, js
}

func connect(t *testing.T, url string, opts ...nats.Option) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

func apiError(code, errCode int, description string) []byte {
	b, _ := json.Marshal(map[string]any{"error": map[string]any{"code": code, "err_code": errCode, "description": description}})
	return b
}

// TestEnsureRidesOutTransientAnswers: what JetStream answers for a while when a cluster forms or
// a peer has just created the bucket — stream not found for a bucket that exists, no suitable
// peers for placement while peers join, no answer at all — makes EnsureKV and EnsureEventStream ask
// again until the answer is right, not fail (status-1 exited in the soak on "ensure kv bucket
// mfa_enrollments: stream not found").
func TestEnsureRidesOutTransientAnswers(t *testing.T) {
	natsx.SetAttemptTimeout(t, 500*time.Millisecond)
	for _, tc := range []struct {
		name   string
		target string // the API request the first three of which are answered by reply
		reply  []byte // nil: not answered
	}{
		{"StreamNotFoundAfterCreate", "STREAM.INFO.KV_rides", apiError(404, 10059, "stream not found")},
		{"NoSuitablePeers", "STREAM.CREATE.KV_rides", apiError(400, 10005, "no suitable peers for placement")},
		{"NoAnswer", "STREAM.INFO.KV_rides", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := natstest.Start(t)
			created := false
			left := 3
			p, js := startProxy(t, srv.Connect(t), func(api string) ([]byte, bool) {
				if strings.HasPrefix(api, "STREAM.CREATE.KV_rides") && !created && tc.target != api {
					created = true
					return nil, false
				}
				// Stream not found is only a lie once the bucket exists: before, it is the truth
				// that has EnsureKV create it.
				ready := created || !strings.HasPrefix(tc.target, "STREAM.INFO")
				if api == tc.target && ready && left > 0 {
					left--
					return tc.reply, true
				}
				return nil, false
			})
			log, buf := newLog()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if _, err := natsx.EnsureKV(ctx, js, jetstream.KeyValueConfig{Bucket: "rides", History: 1}, natsx.WithLogger(log)); err != nil {
				t.Fatalf("EnsureKV: %v (proxy saw %v)", err, p.seen)
			}
			if _, err := srv.JetStream(t).KeyValue(ctx, "rides"); err != nil {
				t.Fatal(err)
			}
			if left != 0 {
				t.Fatalf("%d of the injected answers left; the test did not exercise the retry (saw %v)", left, p.seen)
			}
			if out := buf.String(); !strings.Contains(out, "retrying") || !strings.Contains(out, "kv bucket rides") {
				t.Fatalf("log = %s, want a retry warning naming the bucket", out)
			}
			if _, err := natsx.EnsureEventStream(ctx, js, natsx.WithLogger(log)); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestEnsureConsumerWaitsForStream: a durable consumer created before its stream exists (a peer
// is still creating it, or this node does not know it yet) is created once the stream appears.
func TestEnsureConsumerWaitsForStream(t *testing.T) {
	srv := natstest.Start(t)
	js := srv.JetStream(t)
	log, buf := newLog()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- natsx.AwaitJetStream(ctx, js, log, "consumer c on stream "+events.Stream, func(ctx context.Context) error {
			_, err := js.CreateOrUpdateConsumer(ctx, events.Stream, jetstream.ConsumerConfig{Durable: "c"})
			return err
		})
	}()
	natstest.Eventually(t, 10*time.Second, func() error {
		if !strings.Contains(buf.String(), "retrying") {
			return errors.New("no retry yet")
		}
		return nil
	})
	if _, err := natsx.EnsureEventStream(ctx, srv.JetStream(t)); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-ctx.Done():
		t.Fatal("consumer not created after its stream appeared")
	}
	if _, err := js.Consumer(ctx, events.Stream, "c"); err != nil {
		t.Fatal(err)
	}
}

// TestEnsureGivesUpNamingWhatItAwaited: a stream that never appears fails when the start-up
// context ends, with an error that names the asset and says it waited.
func TestEnsureGivesUpNamingWhatItAwaited(t *testing.T) {
	js := natstest.Start(t).JetStream(t)
	ctx, cancel := context.WithTimeout(context.Background(), 700*time.Millisecond)
	defer cancel()
	log, _ := newLog()
	err := natsx.AwaitJetStream(ctx, js, log, "consumer c on stream NOPE", func(ctx context.Context) error {
		_, err := js.CreateOrUpdateConsumer(ctx, "NOPE", jetstream.ConsumerConfig{Durable: "c"})
		return err
	})
	if err == nil || !strings.Contains(err.Error(), "consumer c on stream NOPE") || !strings.Contains(err.Error(), "waited") ||
		!errors.Is(err, jetstream.ErrStreamNotFound) {
		t.Fatalf("err = %v, want one that says it waited for the consumer and wraps stream not found", err)
	}
}

// TestEnsureFailsFastOnPermanentErrors: what waiting cannot change fails at once, long before
// the start-up deadline.
func TestEnsureFailsFastOnPermanentErrors(t *testing.T) {
	natsx.SetAttemptTimeout(t, 500*time.Millisecond)
	check := func(t *testing.T, err error, want string) {
		t.Helper()
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("err = %v, want one that says %q", err, want)
		}
		if strings.Contains(err.Error(), "waited") {
			t.Fatalf("err = %v: waited for a permanent error", err)
		}
	}
	ctx := func(t *testing.T) context.Context {
		// Fast means well inside this: the test fails on the deadline otherwise.
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		t.Cleanup(cancel)
		return ctx
	}
	t.Run("ReplicasOnSingleServer", func(t *testing.T) {
		js := natstest.Start(t).JetStream(t)
		_, err := natsx.EnsureKV(ctx(t), js, jetstream.KeyValueConfig{Bucket: "r3"}, natsx.WithReplicas(3))
		check(t, err, "replicas > 1 not supported")
	})
	t.Run("IncompatibleExistingStream", func(t *testing.T) {
		js := natstest.Start(t).JetStream(t)
		if _, err := js.CreateStream(ctx(t), jetstream.StreamConfig{Name: "OTHER", Subjects: []string{events.StreamSubjects}}); err != nil {
			t.Fatal(err)
		}
		_, err := natsx.EnsureEventStream(ctx(t), js)
		check(t, err, "subjects overlap")
	})
	t.Run("PermissionsViolation", func(t *testing.T) {
		srv := natstest.StartWith(t, func(o *server.Options) {
			o.Users = []*server.User{{Username: "svc", Password: "pw", Permissions: &server.Permissions{
				Publish: &server.SubjectPermission{Allow: []string{"mfa.>"}},
			}}}
		})
		js, err := jetstream.New(connect(t, srv.URL, nats.UserInfo("svc", "pw")))
		if err != nil {
			t.Fatal(err)
		}
		_, err = natsx.EnsureKV(ctx(t), js, jetstream.KeyValueConfig{Bucket: "denied"})
		check(t, err, "ermissions violation")
	})
}

// TestEnsureOnFormingCluster: services that start with their NATS cluster (one node up, no meta
// leader yet, which answers nothing for its first seconds) create their stream and bucket once
// the other nodes are up, within their start-up deadline.
func TestEnsureOnFormingCluster(t *testing.T) {
	natsx.SetAttemptTimeout(t, time.Second)
	c := natstest.PlanCluster(t, 3)
	c.StartNode(t, 0)
	watcher := connect(t, c.Servers[0].ClientURL())
	asked, err := watcher.SubscribeSync("$JS.API.>")
	if err != nil {
		t.Fatal(err)
	}
	nc, err := natsx.Connect(c.URL, "forming-test")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	log, _ := newLog()
	done := make(chan error, 1)
	go func() {
		if _, err := natsx.EnsureEventStream(ctx, js, natsx.WithReplicas(3), natsx.WithLogger(log)); err != nil {
			done <- err
			return
		}
		_, err := natsx.EnsureKV(ctx, js, jetstream.KeyValueConfig{Bucket: "forming", History: 1}, natsx.WithReplicas(3), natsx.WithLogger(log))
		done <- err
	}()
	// The first request reached the lone node, which has no meta leader to answer it.
	if _, err := asked.NextMsg(10 * time.Second); err != nil {
		t.Fatalf("no JetStream request reached the first node: %v", err)
	}
	c.StartNode(t, 1)
	c.StartNode(t, 2)
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-ctx.Done():
		t.Fatal("stream and bucket not ensured within the start-up deadline")
	}
}
