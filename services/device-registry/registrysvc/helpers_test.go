package registrysvc_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/mfaflow/mfaflow/events"
	"github.com/mfaflow/mfaflow/events/commands"
	"github.com/mfaflow/mfaflow/pkg/auth"
	"github.com/mfaflow/mfaflow/pkg/fault"
	"github.com/mfaflow/mfaflow/pkg/httpx"
	"github.com/mfaflow/mfaflow/pkg/mongodoc"
	"github.com/mfaflow/mfaflow/pkg/mongotest"
	"github.com/mfaflow/mfaflow/pkg/natstest"
	"github.com/mfaflow/mfaflow/pkg/outbox"
	"github.com/mfaflow/mfaflow/pkg/rpc"
	"github.com/mfaflow/mfaflow/pkg/testkit"
	"github.com/mfaflow/mfaflow/pkg/totp"
	"github.com/mfaflow/mfaflow/services/device-registry/internal/device"
	"github.com/mfaflow/mfaflow/services/device-registry/internal/secretbox"
	kvstore "github.com/mfaflow/mfaflow/services/device-registry/internal/store/kv"
	mongostore "github.com/mfaflow/mfaflow/services/device-registry/internal/store/mongo"
	"github.com/mfaflow/mfaflow/services/device-registry/registrysvc"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.mongodb.org/mongo-driver/v2/bson"
)

// wait is the deadline for every fact a test waits on.
const wait = 10 * time.Second

// env is one registry booted through registrysvc.New on its own embedded NATS server, with an
// HTTP server in front of its routes.
type env struct {
	nc     *nats.Conn
	js     jetstream.JetStream
	svc    *registrysvc.Service
	srv    *httptest.Server
	clock  *testkit.Clock
	tokens auth.HS256
	bucket string
	logs   *testkit.LogBuffer
	key    []byte
	// deliveryKey seals the codes the registry hands to the notifier (oob_test.go).
	deliveryKey []byte
	// backend and mongoURI are the store (registrysvc.Config.Store and MongoURI).
	backend, mongoURI string
	// pending holds the sealed pending credential of each create, by status id, as the status
	// service keeps it with the enrollment.
	pendingMu sync.Mutex
	pending   map[string][]byte
}

// backends are the stores a test that runs on both uses: JetStream KV and MongoDB (the server
// of MFA_MONGODB_URI, or an embedded FerretDB; see pkg/mongotest).
var backends = []string{"nats", "mongo"}

// start boots a registry on the KV backend.
func start(t *testing.T) *env { return startOn(t, "nats") }

// startOn boots a registry on the backend store ("nats" or "mongo", a fresh database each).
func startOn(t *testing.T, store string) *env {
	t.Helper()
	ns := natstest.Start(t)
	nc := ns.Connect(t)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	key, err := secretbox.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	e := &env{
		nc:          nc,
		js:          js,
		clock:       testkit.NewClock(time.Date(2026, 3, 1, 12, 0, 10, 0, time.UTC)), // 10 s into a step
		tokens:      auth.HS256{Key: bytes.Repeat([]byte("k"), auth.MinKeyBytes)},
		bucket:      "devices_" + strings.ReplaceAll(uuid.NewString()[:8], "-", ""),
		logs:        &testkit.LogBuffer{},
		key:         key,
		deliveryKey: bytes.Repeat([]byte{9}, 32),
		backend:     store,
		pending:     map[string][]byte{},
	}
	if store == "mongo" {
		e.mongoURI = mongotest.DatabaseURI(t)
	}
	e.svc, err = registrysvc.New(t.Context(), nc, e.config(1, map[byte][]byte{1: key}), e.logger())
	if err != nil {
		t.Fatalf("registrysvc.New: %v", err)
	}
	t.Cleanup(func() {
		if err := e.svc.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		if t.Failed() {
			t.Logf("registry log:\n%s", e.logs)
		}
	})
	rt := httpx.NewRouter()
	e.svc.Routes(rt)
	e.srv = httptest.NewServer(rt)
	t.Cleanup(e.srv.Close)
	return e
}

// config is the registry's configuration on e's backend with the key ring keys. Step-up is off:
// these tests run the registry alone, without the status service that redeems step-up proofs
// (tests/stepup_test.go runs the rule across the services).
func (e *env) config(current byte, keys map[byte][]byte) registrysvc.Config {
	return registrysvc.Config{
		SecretKeys: keys, CurrentKey: current, Verifier: e.tokens, Clock: e.clock.Now,
		Bucket: e.bucket, Store: e.backend, MongoURI: e.mongoURI, StepUpOff: true,
		DeliveryKey: e.deliveryKey, OOB: device.OOBPolicy{SMSPerUser: 3, SMSPerDestination: 2, SMSRegions: []string{"DE", "AT"}},
	}
}

func (e *env) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), wait)
	t.Cleanup(cancel)
	return ctx
}

// create asks for a pending credential over NATS and returns the secret; the sealed pending
// credential is kept for the verifies of statusID, as the status service keeps it.
func (e *env) create(t *testing.T, statusID, sub string) string {
	t.Helper()
	var reply commands.CreateCredentialReply
	err := rpc.Call(ctxT(t), e.nc, commands.RegistryCreateCredential,
		commands.CreateCredentialRequest{StatusID: statusID, Sub: sub, ExpiresAt: e.clock.Now().Add(10 * time.Minute)}, &reply)
	if err != nil {
		t.Fatalf("create credential: %v", err)
	}
	if len(reply.PendingCredential) == 0 {
		t.Fatal("create credential: no sealed pending credential in the reply")
	}
	e.pendingMu.Lock()
	e.pending[statusID] = reply.PendingCredential
	e.pendingMu.Unlock()
	return reply.Secret
}

// verify sends req as the status service does, with the sealed pending credential of its
// status id (if req has none and create made one).
func (e *env) verify(t *testing.T, req commands.VerifyCredentialRequest, claim *commands.CredentialClaim) error {
	t.Helper()
	if req.PendingCredential == nil {
		e.pendingMu.Lock()
		req.PendingCredential = e.pending[req.StatusID]
		e.pendingMu.Unlock()
	}
	return rpc.Call(ctxT(t), e.nc, commands.RegistryVerifyCredential, req, claim)
}

// claim verifies a right code of secret for statusID without activating: the claimed, still
// pending credential the registry then stores.
func (e *env) claim(t *testing.T, statusID, sub, secret string) commands.CredentialClaim {
	t.Helper()
	var claim commands.CredentialClaim
	if err := e.verify(t, commands.VerifyCredentialRequest{StatusID: statusID, Sub: sub, Code: code(t, secret, e.clock.Now())}, &claim); err != nil {
		t.Fatalf("verify: %v", err)
	}
	return claim
}

// activate enrolls as the status service does: verify the code (claiming the pending
// credential), then register the claimed device.
func (e *env) activate(t *testing.T, req commands.VerifyCredentialRequest) (commands.CredentialClaim, error) {
	t.Helper()
	var claim commands.CredentialClaim
	if err := e.verify(t, req, &claim); err != nil {
		return claim, err
	}
	var reply commands.CredentialClaim
	err := rpc.Call(ctxT(t), e.nc, commands.RegistryActivateCredential, commands.ActivateCredentialRequest{
		StatusID: req.StatusID, Sub: req.Sub, PHID: claim.PHID, DeviceID: claim.DeviceID,
	}, &reply)
	return reply, err
}

// enroll creates and activates a credential for sub and returns the reply and the secret.
func (e *env) enroll(t *testing.T, sub string, dev commands.Device) (commands.CredentialClaim, string) {
	t.Helper()
	statusID := uuid.NewString()
	secret := e.create(t, statusID, sub)
	reply, err := e.activate(t, commands.VerifyCredentialRequest{
		StatusID: statusID, Sub: sub, Code: code(t, secret, e.clock.Now()), Device: dev,
	})
	if err != nil {
		t.Fatalf("activate: %v", err)
	}
	return reply, secret
}

func code(t *testing.T, secret string, at time.Time) string {
	t.Helper()
	c, err := totp.Code(secret, at, totp.Default)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// wrongCode returns a well-formed code that is not right.
func wrongCode(right string) string {
	last := (right[len(right)-1]-'0'+1)%10 + '0'
	return right[:len(right)-1] + string(rune(last))
}

func assertCode(t *testing.T, err error, want fault.Code) {
	t.Helper()
	if got := fault.CodeOf(err); got != want {
		t.Fatalf("error = %v, want code %s", err, want)
	}
}

// store opens the registry's bucket through the KV backend, to read what is stored.
func (e *env) store(t *testing.T) *kvstore.Store {
	t.Helper()
	return kvstore.New(e.kv(t), e.js)
}

func (e *env) kv(t *testing.T) jetstream.KeyValue {
	t.Helper()
	kv, err := e.js.KeyValue(ctxT(t), e.bucket)
	if err != nil {
		t.Fatal(err)
	}
	return kv
}

func (e *env) credential(t *testing.T, statusID string) device.Credential {
	t.Helper()
	c, err := e.store(t).GetByStatusID(ctxT(t), statusID)
	if err != nil {
		t.Fatalf("stored credential of %s: %v", statusID, err)
	}
	return c
}

// rawValues returns every live key of the bucket with its raw value; on MongoDB every
// document of the registry's collections, keyed "<collection>/<_id>", as BSON.
func (e *env) rawValues(t *testing.T) map[string][]byte {
	t.Helper()
	ctx := ctxT(t)
	if e.backend == "mongo" {
		return e.rawDocuments(t)
	}
	kv := e.kv(t)
	lister, err := kv.ListKeys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]byte{}
	for k := range lister.Keys() {
		entry, err := kv.Get(ctx, k)
		if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		out[k] = entry.Value()
	}
	return out
}

// relayed is the fact that every event written with the credential has been published: each
// event its stored value holds is on the stream (or the document is gone).
func (e *env) relayed(t *testing.T, phid string) func() error {
	return func() error {
		entry, err := e.kv(t).Get(t.Context(), "c."+phid)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		var rec struct {
			Outbox []outbox.Message `json:"outbox"`
		}
		if err := json.Unmarshal(entry.Value(), &rec); err != nil {
			return err
		}
		for _, m := range rec.Outbox {
			found := false
			for _, ev := range e.events(t, events.Type("mfa."+strings.TrimPrefix(m.Subject, events.SubjectPrefix))) {
				found = found || ev.MsgID == m.ID
			}
			if !found {
				return fmt.Errorf("event %s (%s) not yet relayed", m.ID, m.Subject)
			}
		}
		return nil
	}
}

// streamEvent is one event as stored on MFA_EVENTS.
type streamEvent struct {
	Raw      []byte
	MsgID    string
	Envelope events.Envelope
}

// events returns every event of type typ on the stream, in order.
func (e *env) events(t *testing.T, typ events.Type) []streamEvent {
	t.Helper()
	ctx := ctxT(t)
	cons, err := e.js.OrderedConsumer(ctx, events.Stream, jetstream.OrderedConsumerConfig{FilterSubjects: []string{typ.Subject()}})
	if err != nil {
		t.Fatal(err)
	}
	batch, err := cons.FetchNoWait(1000)
	if err != nil {
		t.Fatal(err)
	}
	var out []streamEvent
	for m := range batch.Messages() {
		se := streamEvent{Raw: m.Data(), MsgID: m.Headers().Get(jetstream.MsgIDHeader)}
		if err := json.Unmarshal(m.Data(), &se.Envelope); err != nil {
			t.Fatalf("event on %s is not a CloudEvent: %v", m.Subject(), err)
		}
		out = append(out, se)
	}
	if err := batch.Error(); err != nil {
		t.Fatal(err)
	}
	return out
}

// eventsAbout waits until exactly n events of type typ about phid are on the stream, once every
// event written for it has been relayed, and returns them.
func (e *env) eventsAbout(t *testing.T, typ events.Type, phid string, n int) []streamEvent {
	t.Helper()
	natstest.Eventually(t, wait, e.relayed(t, phid))
	var got []streamEvent
	natstest.Eventually(t, wait, func() error {
		got = got[:0]
		for _, ev := range e.events(t, typ) {
			if ev.Envelope.Subject == phid {
				got = append(got, ev)
			}
		}
		if len(got) != n {
			return fmt.Errorf("%d %s events about %s, want %d", len(got), typ, phid, n)
		}
		return nil
	})
	return got
}

// publishEnding publishes an enrollment event as the status service does.
func (e *env) publishEnding(t *testing.T, typ events.Type, statusID, sub string) *jetstream.PubAck {
	t.Helper()
	return e.publishEnrollmentEvent(t, typ, events.Enrollment{
		StatusID: statusID, Sub: sub, Method: "TOTP", Status: "EXPIRED", PreviousStatus: "INITIATED",
	})
}

// publishEnrollmentEvent publishes an enrollment event with data as the status service does.
func (e *env) publishEnrollmentEvent(t *testing.T, typ events.Type, data events.Enrollment) *jetstream.PubAck {
	t.Helper()
	env, err := events.New(uuid.NewString(), events.SourceStatus, typ, data.StatusID, e.clock.Now(), data)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := json.Marshal(env)
	if err != nil {
		t.Fatal(err)
	}
	ack, err := e.js.Publish(ctxT(t), typ.Subject(), raw, jetstream.WithMsgID(env.ID))
	if err != nil {
		t.Fatalf("publish %s: %v", typ, err)
	}
	return ack
}

// do sends an HTTP request as sub ("" = no token) and returns the response and its body.
func (e *env) do(t *testing.T, sub, method, path, body string) (*http.Response, []byte) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctxT(t), method, e.srv.URL+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if sub != "" {
		tok, err := e.tokens.Mint(sub, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, data
}

// deviceJSON is the device object of the HTTP API as a client decodes it.
type deviceJSON struct {
	PHID         string     `json:"ph_id"`
	DeviceID     string     `json:"device_id"`
	Type         string     `json:"type"`
	FriendlyName string     `json:"friendly_name"`
	Verified     bool       `json:"verified"`
	CreatedAt    time.Time  `json:"created_at"`
	LastUsedAt   *time.Time `json:"last_used_at"`
	Platform     string     `json:"platform"`
	Push         bool       `json:"push"`
}

func (e *env) list(t *testing.T, sub string) []deviceJSON {
	t.Helper()
	resp, body := e.do(t, sub, http.MethodGet, "/device-srv/devices", "")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET devices as %s: %d %s", sub, resp.StatusCode, body)
	}
	var out []deviceJSON
	if err := json.Unmarshal(body, &out); err != nil {
		t.Fatalf("devices body %s: %v", body, err)
	}
	return out
}

// assertProblem checks a problem+json response with the given status and code.
func assertProblem(t *testing.T, resp *http.Response, body []byte, status int, code fault.Code) {
	t.Helper()
	if resp.StatusCode != status {
		t.Fatalf("status = %d, want %d (body %s)", resp.StatusCode, status, body)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/problem+json" {
		t.Fatalf("Content-Type = %q, want application/problem+json", ct)
	}
	var p httpx.Problem
	if err := json.Unmarshal(body, &p); err != nil {
		t.Fatalf("problem body %s: %v", body, err)
	}
	if p.Code != string(code) || p.Status != status {
		t.Fatalf("problem = %+v, want code %s", p, code)
	}
}

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

func (e *env) rawDocuments(t *testing.T) map[string][]byte {
	t.Helper()
	ctx := ctxT(t)
	client, db, err := mongodoc.Connect(ctx, e.mongoURI)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = client.Disconnect(context.Background()) }()
	out := map[string][]byte{}
	for _, coll := range []string{mongostore.CredentialsCollection, mongostore.LockoutsCollection, mongostore.RecoverySetsCollection} {
		cur, err := db.Collection(coll).Find(ctx, bson.D{})
		if err != nil {
			t.Fatal(err)
		}
		for cur.Next(ctx) {
			out[coll+"/"+cur.Current.Lookup("_id").String()] = append([]byte(nil), cur.Current...)
		}
		if err := cur.Err(); err != nil {
			t.Fatal(err)
		}
		_ = cur.Close(ctx)
	}
	return out
}
