package tests_test

import (
	"context"
	"encoding/base64"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/mfaflow/mfaflow/events/commands"
	"github.com/mfaflow/mfaflow/pkg/auth"
	"github.com/mfaflow/mfaflow/pkg/config"
	"github.com/mfaflow/mfaflow/pkg/natstest"
	"github.com/mfaflow/mfaflow/pkg/natsx"
	"github.com/mfaflow/mfaflow/pkg/rpc"
	"github.com/mfaflow/mfaflow/services/device-registry/registrysvc"
	"github.com/mfaflow/mfaflow/tests/harness"
)

// TestServiceOverTLSWithCreds runs the device registry's main (registrysvc.Run, as the binary
// does) against a NATS server in operator mode that also requires TLS client certificates,
// configured only through the environment: MFA_NATS_CREDS and MFA_NATS_TLS_CERT, _KEY and _CA.
// The registry creates its stream and bucket over that connection and answers a command from
// another user of the account, and its HTTP side reports ready; then it shuts down cleanly.
func TestServiceOverTLSWithCreds(t *testing.T) {
	op, pki := natstest.NewOperator(t), natstest.NewPKI(t)
	registryCreds, _ := op.User("device-registry")
	clientCreds, _ := op.User("caller")
	ns := natstest.StartWith(t, op.Configure, pki.Configure)
	url := strings.Replace(ns.URL, "nats://", "tls://", 1)

	addr := freeAddr(t)
	jwtKey := "tls-creds-test-jwt-key-0123456789abcdef"
	secure := func(creds string) map[string]string {
		return map[string]string{
			"MFA_NATS_URL": url, "MFA_NATS_CREDS": creds,
			"MFA_NATS_TLS_CERT": pki.ClientCert, "MFA_NATS_TLS_KEY": pki.ClientKey, "MFA_NATS_TLS_CA": pki.CA,
		}
	}
	vars := secure(registryCreds)
	vars["MFA_HTTP_ADDR"], vars["MFA_JWT_SECRET"], vars["MFA_LOG_LEVEL"] = addr, jwtKey, "warn"
	vars["MFA_SECRET_KEY"] = base64.StdEncoding.EncodeToString([]byte("0123456789abcdef0123456789abcdef"))
	cfg, err := config.FromEnv(func(k string) string { return vars[k] })
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	done := make(chan error, 1)
	go func() { done <- registrysvc.Run(ctx, cfg) }()

	registry := &harness.Stack{URL: "http://" + addr}
	natstest.Eventually(t, 20*time.Second, func() error {
		select {
		case err := <-done:
			t.Fatalf("the registry stopped: %v", err)
		default:
		}
		resp, err := http.Get(registry.URL + "/readyz") // the port opens once the service is wired
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("GET /readyz: %d", resp.StatusCode)
		}
		return nil
	})

	callerCfg, err := config.FromEnv(func(k string) string { return secure(clientCreds)[k] })
	if err != nil {
		t.Fatal(err)
	}
	opts, err := callerCfg.NATSOptions()
	if err != nil {
		t.Fatal(err)
	}
	nc, err := natsx.Connect(callerCfg.NATSURL, "tls-creds-caller", opts...)
	if err != nil {
		t.Fatalf("caller over TLS with creds: %v", err)
	}
	defer nc.Close()
	var reply commands.CreateCredentialReply
	if err := rpc.Call(testCtx(t), nc, commands.RegistryCreateCredential,
		commands.CreateCredentialRequest{StatusID: uuid.NewString(), Sub: "alice", ExpiresAt: time.Now().Add(time.Minute)}, &reply); err != nil || reply.Secret == "" {
		t.Fatalf("create a credential over TLS with creds: %+v %v", reply, err)
	}
	tok, err := auth.HS256{Key: []byte(jwtKey)}.Mint("alice", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	registry.MustJSON(t, http.MethodGet, "/device-srv/devices", tok, nil, http.StatusOK, nil)

	stop()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("registry Run after its context ended: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("the registry did not stop within 15 s")
	}
}

// TestDevStackOnSecuredNATS runs the dev stack against an outside NATS server (MFA_NATS_URL)
// that wants a .creds user and a client certificate: the stack's services log in with
// MFA_NATS_CREDS and MFA_NATS_TLS_* as the standalone services do, and an enrollment starts.
func TestDevStackOnSecuredNATS(t *testing.T) {
	op, pki := natstest.NewOperator(t), natstest.NewPKI(t)
	creds, _ := op.User("devstack")
	ns := natstest.StartWith(t, op.Configure, pki.Configure)
	st := harness.Start(t, harness.Options{}, map[string]string{
		"MFA_NATS_URL": strings.Replace(ns.URL, "nats://", "tls://", 1), "MFA_NATS_CREDS": creds,
		"MFA_NATS_TLS_CERT": pki.ClientCert, "MFA_NATS_TLS_KEY": pki.ClientKey, "MFA_NATS_TLS_CA": pki.CA,
	})
	alice := st.Token(t, "alice")
	in := initiate(t, st, alice, "?qr=none")
	if s := poll(t, st, alice, in.StatusID); s.Status != "INITIATED" {
		t.Fatalf("status = %+v", s)
	}
}
