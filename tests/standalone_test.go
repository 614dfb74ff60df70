package tests_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mfaflow/mfaflow/events/protocol"
	"github.com/mfaflow/mfaflow/mobile-bridge/companion"
	"github.com/mfaflow/mfaflow/pkg/auth"
	"github.com/mfaflow/mfaflow/pkg/natstest"
	"github.com/mfaflow/mfaflow/tests/harness"
)

// freeAddr returns a loopback address with a port that was free a moment ago.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// TestStandaloneServices runs each service as its own process, built from its own main, against
// one NATS server — the production topology in miniature — completes an enrollment across them,
// and stops them with SIGTERM, which each must survive with a clean exit.
func TestStandaloneServices(t *testing.T) {
	bin := t.TempDir()
	mains := map[string]string{
		"initiation": "./services/initiation", "status": "./services/status",
		"device-registry": "./services/device-registry", "mobile-bridge": "./mobile-bridge",
	}
	for name, pkg := range mains {
		build := exec.Command("go", "build", "-o", filepath.Join(bin, name), pkg)
		build.Dir = ".."
		if out, err := build.CombinedOutput(); err != nil {
			t.Fatalf("build %s: %v\n%s", name, err, out)
		}
	}
	ns := natstest.Start(t)
	jwtKey := "standalone-test-jwt-key-0123456789abcdef"
	secretKey := base64.StdEncoding.EncodeToString([]byte("0123456789abcdef0123456789abcdef"))
	// The signing key in its one-line form (newlines as \n), as a Kubernetes secret holds it.
	signingKey := strings.ReplaceAll(signingKeyPEM(t), "\n", `\n`)
	addrs := map[string]string{}
	for name := range mains {
		addrs[name] = freeAddr(t)
	}
	bridgeURL := "http://" + addrs["mobile-bridge"]
	procs := map[string]*exec.Cmd{}
	for name := range mains {
		cmd := exec.Command(filepath.Join(bin, name))
		cmd.Env = append(os.Environ(),
			"MFA_NATS_URL="+ns.URL, "MFA_HTTP_ADDR="+addrs[name], "MFA_JWT_SECRET="+jwtKey,
			"MFA_SECRET_KEY="+secretKey, "MFA_SIGNING_KEY="+signingKey, "MFA_PUBLIC_URL="+bridgeURL, "MFA_LOG_LEVEL=warn")
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		procs[name] = cmd
		t.Cleanup(func() { _ = cmd.Process.Kill() })
	}
	for name, addr := range addrs {
		natstest.Eventually(t, 20*time.Second, func() error {
			resp, err := http.Get("http://" + addr + "/healthz")
			if err != nil {
				return fmt.Errorf("%s not ready: %w", name, err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("%s /healthz: %d", name, resp.StatusCode)
			}
			return nil
		})
	}

	tok, err := auth.HS256{Key: []byte(jwtKey)}.Mint("alice", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	initiation := &harness.Stack{URL: "http://" + addrs["initiation"]}
	status := &harness.Stack{URL: "http://" + addrs["status"]}
	registry := &harness.Stack{URL: "http://" + addrs["device-registry"]}
	// The status process publishes the key of MFA_SIGNING_KEY, read from its one-line form.
	var jwks struct {
		Keys []struct{ Kid, Alg string } `json:"keys"`
	}
	status.MustJSON(t, http.MethodGet, "/.well-known/jwks.json", "", nil, http.StatusOK, &jwks)
	if len(jwks.Keys) != 1 || jwks.Keys[0].Alg != "ES256" || jwks.Keys[0].Kid == "" {
		t.Fatalf("status JWKS = %+v, want the one configured ES256 key", jwks)
	}
	var in initiateResponse
	initiation.MustJSON(t, http.MethodPost, "/verification-srv/v2/setup/initiate/totp", tok, nil, http.StatusOK, &in)
	if s := poll(t, status, tok, in.StatusID); s.Status != "INITIATED" {
		t.Fatalf("poll = %+v", s)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	ack, err := companion.Enroll(ctx, in.OTPAuthURI, protocol.Device{DeviceID: "standalone-phone", Name: "Phone"}, time.Now)
	if err != nil || ack.Status != "ENROLLED" {
		t.Fatalf("companion enroll = %+v, %v", ack, err)
	}
	if s := poll(t, status, tok, in.StatusID); s.Status != "ENROLLED" || s.PHID != ack.PHID {
		t.Fatalf("poll = %+v", s)
	}
	var devices []map[string]any
	registry.MustJSON(t, http.MethodGet, "/device-srv/devices", tok, nil, http.StatusOK, &devices)
	if len(devices) != 1 || devices[0]["ph_id"] != ack.PHID {
		t.Fatalf("devices = %v", devices)
	}

	for name, cmd := range procs {
		if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("%s exited with %v after SIGTERM, want a clean exit", name, err)
			}
		case <-time.After(15 * time.Second):
			t.Errorf("%s did not stop within 15s of SIGTERM", name)
		}
	}
}

// signingKeyPEM is a new EC P-256 private key as PKCS#8 PEM.
func signingKeyPEM(t *testing.T) string {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
}
