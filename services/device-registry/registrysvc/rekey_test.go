package registrysvc_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/mfaflow/mfaflow/events/commands"
	"github.com/mfaflow/mfaflow/events/method"
	"github.com/mfaflow/mfaflow/pkg/httpx"
	"github.com/mfaflow/mfaflow/services/device-registry/internal/secretbox"
	"github.com/mfaflow/mfaflow/services/device-registry/registrysvc"
)

// restart replaces the running registry by one on the same store with another key ring, as a
// rolling deploy with a new MFA_SECRET_KEYS does.
func (e *env) restart(t *testing.T, current byte, keys map[byte][]byte) {
	t.Helper()
	if err := e.svc.Close(); err != nil {
		t.Fatal(err)
	}
	svc, err := registrysvc.New(t.Context(), e.nc, e.config(current, keys), e.logger())
	if err != nil {
		t.Fatalf("restart: %v", err)
	}
	e.svc = svc
	rt := httpx.NewRouter()
	svc.Routes(rt)
	e.srv = httptest.NewServer(rt)
	t.Cleanup(e.srv.Close)
}

func (e *env) rekey(t *testing.T) (scanned, rekeyed int) {
	t.Helper()
	admin, err := e.tokens.MintScoped("ops", time.Hour, "mfa:admin", "")
	if err != nil {
		t.Fatal(err)
	}
	after := ""
	for {
		req, _ := http.NewRequestWithContext(ctxT(t), http.MethodPost, e.srv.URL+"/verification-srv/admin/secrets/rekey", strings.NewReader(`{"after":"`+after+`","limit":1}`))
		req.Header.Set("Authorization", "Bearer "+admin)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var out struct {
			Scanned, Rekeyed int
			Next             string
		}
		err = json.NewDecoder(resp.Body).Decode(&out)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || err != nil {
			t.Fatalf("rekey: %d %v", resp.StatusCode, err)
		}
		scanned, rekeyed = scanned+out.Scanned, rekeyed+out.Rekeyed
		if out.Next == "" {
			return scanned, rekeyed
		}
		after = out.Next
	}
}

// TestSecretKeyRotation: devices and recovery codes made under key 1 keep working when key 2
// becomes current with key 1 still in the ring; a rekey (in pages, resumable) re-seals every
// secret with key 2; after that key 1 can leave the ring and the devices still sign in. On
// each backend.
func TestSecretKeyRotation(t *testing.T) {
	for _, store := range backends {
		t.Run(store, func(t *testing.T) { testSecretKeyRotation(t, startOn(t, store)) })
	}
}

func testSecretKeyRotation(t *testing.T, e *env) {
	_, secret := e.enroll(t, "alice", commands.Device{})
	_, secret2 := e.enroll(t, "bob", commands.Device{})
	codes := e.generateRecoveryCodes(t, "alice")

	keyB, _ := secretbox.GenerateKey()
	e.restart(t, 2, map[byte][]byte{2: keyB, 1: e.key})
	e.clock.Advance(30 * time.Second)
	if r := e.check(t, "alice", method.TOTP, code(t, secret, e.clock.Now())); r.Result != resultOK {
		t.Fatalf("a device sealed with key 1, key 2 current: %+v", r)
	}
	if r := e.check(t, "alice", method.BackupCode, codes[0]); r.Result != resultOK {
		t.Fatalf("a recovery code hashed under key 1, key 2 current: %+v", r)
	}
	if scanned, rekeyed := e.rekey(t); scanned != 2 || rekeyed != 2 {
		t.Fatalf("rekey: scanned %d rekeyed %d, want 2 and 2", scanned, rekeyed)
	}
	if _, rekeyed := e.rekey(t); rekeyed != 0 {
		t.Fatalf("a second rekey re-sealed %d, want 0", rekeyed)
	}
	raw := e.rawValues(t)
	if len(raw) == 0 {
		t.Fatal("nothing stored")
	}
	for _, v := range raw {
		if strings.Contains(string(v), secret) {
			t.Fatal("a secret is stored in clear")
		}
	}

	e.restart(t, 2, map[byte][]byte{2: keyB}) // key 1 retired
	e.clock.Advance(30 * time.Second)
	if r := e.check(t, "alice", method.TOTP, code(t, secret, e.clock.Now())); r.Result != resultOK {
		t.Fatalf("after key 1 left the ring: %+v", r)
	}
	if r := e.check(t, "bob", method.TOTP, code(t, secret2, e.clock.Now())); r.Result != resultOK {
		t.Fatalf("bob after key 1 left the ring: %+v", r)
	}
}
