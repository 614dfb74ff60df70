package tests_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/mfaflow/mfaflow/events"
	"github.com/mfaflow/mfaflow/events/commands"
	"github.com/mfaflow/mfaflow/events/protocol"
	"github.com/mfaflow/mfaflow/mobile-bridge/bridgesvc"
	"github.com/mfaflow/mfaflow/mobile-bridge/companion"
	"github.com/mfaflow/mfaflow/pkg/auth"
	"github.com/mfaflow/mfaflow/pkg/httpx"
	"github.com/mfaflow/mfaflow/pkg/natstest"
	"github.com/mfaflow/mfaflow/pkg/natsx"
	"github.com/mfaflow/mfaflow/pkg/serve"
	"github.com/mfaflow/mfaflow/pkg/totp"
	"github.com/mfaflow/mfaflow/services/device-registry/registrysvc"
	"github.com/mfaflow/mfaflow/services/initiation/initiationsvc"
	"github.com/mfaflow/mfaflow/services/status/statussvc"
	"github.com/mfaflow/mfaflow/tests/harness"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

const permissionsConf = "../deploy/nats/mfaflow-permissions.conf"

// permissionUsers are the users of deploy/nats/mfaflow-permissions.conf with the variable of
// their password.
var permissionUsers = map[string]string{
	"status": "MFA_NATS_STATUS_PASSWORD", "device-registry": "MFA_NATS_REGISTRY_PASSWORD",
	"initiation": "MFA_NATS_INITIATION_PASSWORD", "mobile-bridge": "MFA_NATS_BRIDGE_PASSWORD",
	"events-reader": "MFA_NATS_READER_PASSWORD", "notifier": "MFA_NATS_NOTIFIER_PASSWORD",
}

// registryConsumer is the registry's durable consumer of enrollment endings (its
// natsapi.ConsumerName), which the permission file keeps out of downstream consumers' reach.
const registryConsumer = "device-registry-enrollment-endings"

// withPermissions gives a server the accounts and users of deploy/nats/mfaflow-permissions.conf,
// plus a test-only user "observer" in the same account without restrictions, through which the
// test looks at what the services did.
func withPermissions(t *testing.T) func(*server.Options) {
	for user, env := range permissionUsers {
		t.Setenv(env, "pw-"+user)
	}
	return func(o *server.Options) {
		f, err := server.ProcessConfigFile(permissionsConf)
		if err != nil {
			t.Fatalf("%s: %v", permissionsConf, err)
		}
		if len(f.Users) == 0 {
			t.Fatalf("%s: no users", permissionsConf)
		}
		o.Accounts = f.Accounts
		o.Users = append(f.Users, &server.User{Username: "observer", Password: "pw-observer", Account: f.Users[0].Account})
	}
}

// TestServicesRunWithTheirNATSPermissions runs every service as its own NATS user with the
// permission set shipped in deploy/nats/mfaflow-permissions.conf and goes through what the
// services do with NATS: an enrollment through the companion, a cancelled enrollment (whose
// pending credential the registry discards from its consumer), a push-capable login, a push and
// a TOTP sign-in, and a downstream consumer reading MFA_EVENTS as events/README shows. It does so
// on one server with single-replica buckets (direct gets) and on a 3-node cluster with
// replicated ones (leader reads, direct gets turned off), the two ways mfaflow runs. A subject the
// code needs but the file lacks is a permissions violation, which fails the test; so does a
// service that can publish what it has no business publishing.
//
// MFA_NATS_PERM_TRACE=1 logs every subject each user published, which is how the JetStream API
// subjects in the file were found.
func TestServicesRunWithTheirNATSPermissions(t *testing.T) {
	t.Run("SingleServer", func(t *testing.T) {
		opts := &server.Options{Host: "127.0.0.1", Port: server.RANDOM_PORT, JetStream: true, StoreDir: t.TempDir(), NoSigs: true, NoLog: true}
		withPermissions(t)(opts)
		ns, err := server.NewServer(opts)
		if err != nil {
			t.Fatal(err)
		}
		go ns.Start()
		if !ns.ReadyForConnections(10 * time.Second) {
			t.Fatal("nats not ready")
		}
		t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
		runWithPermissions(t, ns.ClientURL(), 1, ns)
	})
	t.Run("Cluster", func(t *testing.T) {
		c := natstest.StartCluster(t, 3, withPermissions(t))
		runWithPermissions(t, c.URL, 3, c.Servers...)
	})
}

func runWithPermissions(t *testing.T, url string, replicas int, servers ...*server.Server) {
	if os.Getenv("MFA_NATS_PERM_TRACE") != "" {
		tr := &publishTrace{subjects: map[string]map[string]bool{}}
		for _, s := range servers {
			s.SetLogger(tr, false, true)
		}
		t.Cleanup(func() { t.Log(tr) })
	}
	var (
		mu         sync.Mutex
		violations []string
	)
	connect := func(user string) *nats.Conn {
		nc, err := natsx.Connect(url, "mfaflow-"+user, nats.UserInfo(user, "pw-"+user), nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			mu.Lock()
			violations = append(violations, user+": "+err.Error())
			mu.Unlock()
		}))
		if err != nil {
			t.Fatalf("connect as %s: %v", user, err)
		}
		t.Cleanup(nc.Close)
		return nc
	}

	// Start-up retries NATS errors it takes for an outage, such as a request that was refused;
	// the deadline turns a missing permission there into a failure.
	ctx := testCtx(t)
	log := slog.New(slog.DiscardHandler)
	tokens := auth.HS256{Key: bytes.Repeat([]byte("k"), auth.MinKeyBytes)}
	rt := httpx.NewRouter()
	srv := httptest.NewServer(rt)
	t.Cleanup(srv.Close)
	key := bytes.Repeat([]byte{7}, 32)
	var stateful []serve.Component // status and registry, closed at the end to check what they leave
	startRegistry := func() {
		reg, err := registrysvc.New(ctx, connect("device-registry"), registrysvc.Config{SecretKey: key, Verifier: tokens, Replicas: replicas}, log)
		if err != nil {
			t.Fatalf("registry with its permissions: %v", err)
		}
		stateful = append(stateful, reg)
	}
	startStatus := func() {
		st, err := statussvc.New(ctx, connect("status"), statussvc.Config{Verifier: tokens, SigningKey: signingKeyPEM(t), TokenIssuer: srv.URL, Replicas: replicas}, log)
		if err != nil {
			t.Fatalf("status with its permissions: %v", err)
		}
		stateful = append(stateful, st)
	}
	// Either service may be the first to start and create MFA_EVENTS: the cluster run starts the
	// status service first, the single-server run the registry.
	if replicas > 1 {
		startStatus()
		startRegistry()
	} else {
		startRegistry()
		startStatus()
	}
	ini, err := initiationsvc.New(ctx, connect("initiation"), initiationsvc.Config{Verifier: tokens, PublicURL: srv.URL}, log)
	if err != nil {
		t.Fatal(err)
	}
	br, err := bridgesvc.New(ctx, connect("mobile-bridge"), bridgesvc.Config{}, log)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range append(stateful, ini, br) {
		t.Cleanup(func() { _ = c.Close() })
		c.Routes(rt)
	}

	// A downstream consumer, as events/README shows one: a durable consumer with explicit acks,
	// here on the stream looked up first.
	reader, err := jetstream.New(connect("events-reader"))
	if err != nil {
		t.Fatal(err)
	}
	stream, err := reader.Stream(testCtx(t), events.Stream)
	if err != nil {
		t.Fatalf("events-reader looks up %s: %v", events.Stream, err)
	}
	audit, err := stream.CreateOrUpdateConsumer(testCtx(t), jetstream.ConsumerConfig{
		Durable: "audit", FilterSubject: events.StreamSubjects, DeliverPolicy: jetstream.DeliverAllPolicy, AckPolicy: jetstream.AckExplicitPolicy,
	})
	if err != nil {
		t.Fatalf("events-reader creates its consumer: %v", err)
	}
	var (
		seenMu sync.Mutex
		seen   []string
	)
	cc, err := audit.Consume(func(m jetstream.Msg) {
		seenMu.Lock()
		seen = append(seen, m.Subject())
		seenMu.Unlock()
		_ = m.Ack()
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cc.Stop)

	web := &harness.Stack{URL: srv.URL}
	alice, err := tokens.Mint("alice", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	// With an Idempotency-Key, so that the keyed path's command is inside the permissions too.
	r := web.Do(t, http.MethodPost, "/verification-srv/v2/setup/initiate/totp?qr=none", alice, nil, "Idempotency-Key", "natsperm-"+uuid.NewString())
	var in initiateResponse
	if err := json.Unmarshal(r.Body, &in); r.Status != http.StatusOK || err != nil {
		t.Fatalf("initiate: %d %s", r.Status, r.Body)
	}
	dk, _ := companion.NewDeviceKey()
	jwk, _ := companion.PublicJWK(&dk.PublicKey)
	c, err := companion.Dial(testCtx(t), srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Scan(testCtx(t), in.ExchangeID.ExchangeID, protocol.Device{DeviceID: "p1"}); err != nil {
		t.Fatalf("scan through the bridge: %v", err)
	}
	code, _ := totp.Code(in.TOTPSecret, time.Now(), totp.Default)
	ack, err := c.EnrollWithKey(testCtx(t), in.ExchangeID.ExchangeID, code, &jwk)
	if err != nil || ack.Status != "ENROLLED" {
		t.Fatalf("enroll through the bridge: %+v %v", ack, err)
	}
	if _, err := c.Login(testCtx(t), ack.PHID, dk); err != nil {
		t.Fatalf("device login: %v", err)
	}
	var push struct {
		authInitiation
		Number string `json:"number"`
	}
	web.MustJSON(t, http.MethodPost, "/verification-srv/authentication/push/initiation", alice, nil, http.StatusOK, &push)
	ch := nextChallenge(t, c)
	if pa, err := c.Respond(testCtx(t), ch.ChallengeID, protocol.DecisionApprove, push.Number, ""); err != nil || pa.Status != "AUTHENTICATED" {
		t.Fatalf("push approval: %+v %v", pa, err)
	}
	// A second enrollment needs step-up: the push sign-in's mfa_token, which the registry asks
	// the status service to spend (so that command is inside the permissions too).
	// A poll may be served by a view a moment behind the approval: poll until AUTHENTICATED.
	var pushed struct {
		Status   string `json:"status"`
		MFAToken string `json:"mfa_token"`
	}
	natstest.Eventually(t, 10*time.Second, func() error {
		web.MustJSON(t, http.MethodGet, "/verification-srv/verificationstatus/"+push.StatusID, alice, nil, http.StatusOK, &pushed)
		if pushed.Status != "AUTHENTICATED" {
			return fmt.Errorf("push sign-in %s", pushed.Status)
		}
		return nil
	})
	r = web.Do(t, http.MethodPost, "/verification-srv/v2/setup/initiate/totp?qr=none", alice, nil, "X-MFA-Token", pushed.MFAToken)
	var cancelled initiateResponse
	if err := json.Unmarshal(r.Body, &cancelled); r.Status != http.StatusOK || err != nil {
		t.Fatalf("second initiation with step-up: %d %s", r.Status, r.Body)
	}
	web.MustJSON(t, http.MethodDelete, "/verification-srv/verificationstatus/"+cancelled.StatusID, alice, nil, http.StatusOK, nil)
	var auth1 authInitiation
	web.MustJSON(t, http.MethodPost, "/verification-srv/authentication/totp/initiation", alice, nil, http.StatusOK, &auth1)
	next, _ := totp.Code(in.TOTPSecret, time.Now().Add(30*time.Second), totp.Default) // ±1 step: valid now, not the enrollment's
	var res authResult
	web.MustJSON(t, http.MethodPost, "/verification-srv/authentication/totp/verification", alice,
		map[string]string{"exchange_id": auth1.ExchangeID.ExchangeID, "pass_code": next}, http.StatusOK, &res)
	if res.Status != "AUTHENTICATED" || res.MFAToken == "" {
		t.Fatalf("sign-in = %+v", res)
	}
	var devices []struct {
		PHID string `json:"ph_id"`
	}
	web.MustJSON(t, http.MethodGet, "/device-srv/devices", alice, nil, http.StatusOK, &devices)
	if len(devices) != 1 || devices[0].PHID != ack.PHID {
		t.Fatalf("devices = %+v, want the one enrolled", devices)
	}

	// Every event reached the downstream consumer, which acked them all; the registry's
	// consumer handled and acked both enrollment endings (the device registered, the cancelled
	// one's credential discarded).
	wantEvents := []events.Type{events.EnrollmentEnrolled, events.EnrollmentCancelled, events.DeviceRegistered, events.VerificationSucceeded, events.PushAcknowledged}
	natstest.Eventually(t, 10*time.Second, func() error {
		seenMu.Lock()
		defer seenMu.Unlock()
		for _, typ := range wantEvents {
			if !slices.Contains(seen, typ.Subject()) {
				return fmt.Errorf("the events-reader has not received %s (got %v)", typ, seen)
			}
		}
		return nil
	})
	observer, err := jetstream.New(connect("observer"))
	if err != nil {
		t.Fatal(err)
	}
	handled := func(consumer string, atLeast uint64) func() error {
		return func() error {
			ci, err := observer.Consumer(testCtx(t), events.Stream, consumer)
			if err != nil {
				return err
			}
			info, err := ci.Info(testCtx(t))
			if err != nil {
				return err
			}
			if info.Delivered.Consumer < atLeast || info.NumAckPending != 0 || info.NumPending != 0 || info.NumRedelivered != 0 {
				return fmt.Errorf("consumer %s: delivered %d, ack pending %d, pending %d, redelivered %d",
					consumer, info.Delivered.Consumer, info.NumAckPending, info.NumPending, info.NumRedelivered)
			}
			return nil
		}
	}
	natstest.Eventually(t, 10*time.Second, handled("audit", uint64(len(wantEvents))))
	natstest.Eventually(t, 10*time.Second, handled(registryConsumer, 2))

	// What the users may not do: the initiation user check codes, the bridge create credentials,
	// the events-reader read a service's bucket through a consumer of its own or take the
	// registry's consumer (pull its messages, delete it).
	short := func() context.Context {
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		t.Cleanup(cancel)
		return ctx
	}
	for user, subject := range map[string]string{"initiation": commands.RegistryFactorsCheck, "mobile-bridge": commands.RegistryCreateCredential} {
		if _, err := connect(user).RequestWithContext(short(), subject, []byte(`{}`)); err == nil {
			t.Errorf("%s could call %s", user, subject)
		}
	}
	if _, err := reader.OrderedConsumer(short(), "KV_"+registrysvc.DefaultBucket, jetstream.OrderedConsumerConfig{}); err == nil {
		t.Error("the events-reader could read the registry's bucket")
	}
	if err := reader.DeleteConsumer(short(), events.Stream, registryConsumer); err == nil {
		t.Error("the events-reader could delete the registry's consumer")
	}
	stealNext := "$JS.API.CONSUMER.MSG.NEXT." + events.Stream + "." + registryConsumer
	if _, err := connect("events-reader").RequestWithContext(short(), stealNext, []byte(`{"batch":1,"no_wait":true}`)); err == nil {
		t.Error("the events-reader could pull from the registry's consumer")
	}
	want := []string{
		`initiation: nats: permissions violation: Permissions Violation for Publish to "` + commands.RegistryFactorsCheck + `"`,
		`mobile-bridge: nats: permissions violation: Permissions Violation for Publish to "` + commands.RegistryCreateCredential + `"`,
		`events-reader: nats: permissions violation: Permissions Violation for Publish to "$JS.API.CONSUMER.CREATE.KV_` + registrysvc.DefaultBucket + `.`,
		`events-reader: nats: permissions violation: Permissions Violation for Publish to "$JS.API.CONSUMER.DELETE.` + events.Stream + `.` + registryConsumer + `"`,
		`events-reader: nats: permissions violation: Permissions Violation for Publish to "` + stealNext + `"`,
	}
	natstest.Eventually(t, 5*time.Second, func() error {
		mu.Lock()
		defer mu.Unlock()
		for _, w := range want {
			if !slices.ContainsFunc(violations, func(v string) bool { return strings.HasPrefix(v, w) }) {
				return fmt.Errorf("no violation %q among %q", w, violations)
			}
		}
		return nil
	})

	// Closed, the services leave no consumer on their buckets: the watchers' and listers'
	// ephemeral consumers are deleted, not left to time out.
	for _, c := range stateful {
		if err := c.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	}
	for _, bucket := range []string{registrysvc.DefaultBucket, statussvc.DefaultBucket} {
		natstest.Eventually(t, 10*time.Second, func() error {
			st, err := observer.Stream(testCtx(t), "KV_"+bucket)
			if err != nil {
				return err
			}
			names := st.ConsumerNames(testCtx(t))
			var left []string
			for n := range names.Name() {
				left = append(left, n)
			}
			if err := names.Err(); err != nil {
				return err
			}
			if len(left) > 0 {
				return fmt.Errorf("consumers left on KV_%s: %v", bucket, left)
			}
			return nil
		})
	}
	mu.Lock()
	defer mu.Unlock()
	for _, v := range violations {
		if !slices.ContainsFunc(want, func(w string) bool { return strings.HasPrefix(v, w) }) {
			t.Errorf("unexpected permissions violation: %s", v)
		}
	}
}

// publishTrace is a nats-server logger that keeps, per client name, every subject published,
// folded into the patterns the permission file uses.
type publishTrace struct {
	mu       sync.Mutex
	subjects map[string]map[string]bool
}

var tracedPub = regexp.MustCompile(`"[^"]*:mfaflow-([a-z-]+)"[^<]* <<- \[H?PUB ([^ \]]+)`)

// traceFolds keep the first tokens of subjects that carry ids, keys or generated names.
var traceFolds = []struct {
	prefix string
	keep   int
}{
	{"_INBOX.", 1}, {"$KV.", 2}, {"$JS.ACK.", 4}, {"$JS.API.DIRECT.GET.", 5},
	{"$JS.API.CONSUMER.CREATE.KV_", 5}, {"$JS.API.CONSUMER.DELETE.KV_", 5},
	{"mfa.status.v1.changed.", 4}, {"mfa.bridge.v1.device.", 4}, {"mfa.bridge.v1.session.", 4},
}

func foldSubject(subject string) string {
	for _, f := range traceFolds {
		if tokens := strings.Split(subject, "."); strings.HasPrefix(subject, f.prefix) && len(tokens) > f.keep {
			return strings.Join(tokens[:f.keep], ".") + ".>"
		}
	}
	return subject
}

// Tracef records a PUB or HPUB from a client named mfaflow-<user>.
func (p *publishTrace) Tracef(format string, v ...any) {
	m := tracedPub.FindStringSubmatch(fmt.Sprintf(format, v...))
	if m == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.subjects[m[1]] == nil {
		p.subjects[m[1]] = map[string]bool{}
	}
	p.subjects[m[1]][foldSubject(m[2])] = true
}

func (p *publishTrace) String() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var b strings.Builder
	for user, subs := range p.subjects {
		list := make([]string, 0, len(subs))
		for s := range subs {
			list = append(list, s)
		}
		slices.Sort(list)
		fmt.Fprintf(&b, "%s publishes:\n  %s\n", user, strings.Join(list, "\n  "))
	}
	return b.String()
}

func (*publishTrace) Noticef(string, ...any) {}
func (*publishTrace) Warnf(string, ...any)   {}
func (*publishTrace) Fatalf(string, ...any)  {}
func (*publishTrace) Errorf(string, ...any)  {}
func (*publishTrace) Debugf(string, ...any)  {}
