package tests_test

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mfaflow/mfaflow/events/commands"
	"github.com/mfaflow/mfaflow/events/protocol"
	"github.com/mfaflow/mfaflow/mobile-bridge/bridgesvc"
	"github.com/mfaflow/mfaflow/mobile-bridge/companion"
	"github.com/mfaflow/mfaflow/pkg/auth"
	"github.com/mfaflow/mfaflow/pkg/httpx"
	"github.com/mfaflow/mfaflow/pkg/natsx"
	"github.com/mfaflow/mfaflow/pkg/totp"
	"github.com/mfaflow/mfaflow/services/device-registry/registrysvc"
	"github.com/mfaflow/mfaflow/services/initiation/initiationsvc"
	"github.com/mfaflow/mfaflow/services/status/statussvc"
	"github.com/mfaflow/mfaflow/tests/harness"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// TestServicesRunWithTheirNATSPermissions runs every service as its own NATS user with the
// permission set shipped in deploy/nats/mfaflow-permissions.conf, completes an enrollment through
// the companion, a push-capable login and a TOTP sign-in, and checks that a service cannot
// publish what it has no business publishing. A permission the code needs but the file lacks
// fails the flow here.
func TestServicesRunWithTheirNATSPermissions(t *testing.T) {
	passwords := map[string]string{
		"status": "MFA_NATS_STATUS_PASSWORD", "device-registry": "MFA_NATS_REGISTRY_PASSWORD",
		"initiation": "MFA_NATS_INITIATION_PASSWORD", "mobile-bridge": "MFA_NATS_BRIDGE_PASSWORD",
		"events-reader": "MFA_NATS_READER_PASSWORD",
	}
	for user, env := range passwords {
		t.Setenv(env, "pw-"+user)
	}
	dir := t.TempDir()
	opts, err := server.ProcessConfigFile("../deploy/nats/mfaflow-permissions.conf")
	if err != nil {
		t.Fatalf("deploy/nats/mfaflow-permissions.conf: %v", err)
	}
	opts.Host, opts.Port, opts.JetStream, opts.StoreDir, opts.NoSigs, opts.NoLog = "127.0.0.1", server.RANDOM_PORT, true, filepath.Join(dir, "js"), true, true
	ns, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats not ready")
	}
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })

	var (
		mu         sync.Mutex
		violations []string
	)
	connect := func(user string) *nats.Conn {
		url := strings.Replace(ns.ClientURL(), "nats://", "nats://"+user+":pw-"+user+"@", 1)
		nc, err := natsx.Connect(url, "mfaflow-"+user, nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
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

	ctx := context.Background()
	log := slog.New(slog.DiscardHandler)
	tokens := auth.HS256{Key: bytes.Repeat([]byte("k"), auth.MinKeyBytes)}
	rt := httpx.NewRouter()
	srv := httptest.NewServer(rt)
	t.Cleanup(srv.Close)
	key := bytes.Repeat([]byte{7}, 32)
	reg, err := registrysvc.New(ctx, connect("device-registry"), registrysvc.Config{SecretKey: key, Verifier: tokens}, log)
	if err != nil {
		t.Fatalf("registry with its permissions: %v", err)
	}
	t.Cleanup(func() { _ = reg.Close() })
	st, err := statussvc.New(ctx, connect("status"), statussvc.Config{Verifier: tokens, SigningKey: signingKeyPEM(t), TokenIssuer: srv.URL}, log)
	if err != nil {
		t.Fatalf("status with its permissions: %v", err)
	}
	t.Cleanup(func() { _ = st.Close() })
	ini, err := initiationsvc.New(ctx, connect("initiation"), initiationsvc.Config{Verifier: tokens, PublicURL: srv.URL}, log)
	if err != nil {
		t.Fatal(err)
	}
	br, err := bridgesvc.New(ctx, connect("mobile-bridge"), bridgesvc.Config{}, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = br.Close() })
	for _, c := range []interface{ Routes(*httpx.Router) }{reg, st, ini, br} {
		c.Routes(rt)
	}

	web := &harness.Stack{URL: srv.URL}
	alice, err := tokens.Mint("alice", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	// With an Idempotency-Key, so that the keyed path's command is inside the permissions too.
	r := web.Do(t, http.MethodPost, "/verification-srv/v2/setup/initiate/totp?qr=none", alice, nil, "Idempotency-Key", "natsperm-1")
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
	var auth1 authInitiation
	web.MustJSON(t, http.MethodPost, "/verification-srv/authentication/totp/initiation", alice, nil, http.StatusOK, &auth1)
	next, _ := totp.Code(in.TOTPSecret, time.Now().Add(30*time.Second), totp.Default) // ±1 step: valid now, not the enrollment's
	var res authResult
	web.MustJSON(t, http.MethodPost, "/verification-srv/authentication/totp/verification", alice,
		map[string]string{"exchange_id": auth1.ExchangeID.ExchangeID, "pass_code": next}, http.StatusOK, &res)
	if res.Status != "AUTHENTICATED" || res.MFAToken == "" {
		t.Fatalf("sign-in = %+v", res)
	}

	// The initiation user may not check codes, and the bridge may not create credentials.
	for user, subject := range map[string]string{"initiation": commands.RegistryFactorsCheck, "mobile-bridge": commands.RegistryCreateCredential} {
		nc := connect(user)
		if _, err := nc.Request(subject, []byte(`{}`), 500*time.Millisecond); err == nil {
			t.Errorf("%s could call %s", user, subject)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		mu.Lock()
		got := append([]string(nil), violations...)
		mu.Unlock()
		joined := strings.Join(got, "\n")
		if strings.Contains(joined, "initiation: nats: permissions violation") && strings.Contains(joined, "mobile-bridge: nats: permissions violation") {
			for _, v := range got {
				if !strings.Contains(v, commands.RegistryFactorsCheck) && !strings.Contains(v, commands.RegistryCreateCredential) {
					t.Errorf("unexpected permissions violation in the flow: %s", v)
				}
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("violations seen: %q", got)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
