package initiationsvc_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/mfaflow/mfaflow/pkg/natstest"
)

// TestSubTooLongForQR: a user id so long that the otpauth URI cannot fit in a QR code is
// refused with 400 bad_request before anything is stored: the registry was never asked for a
// credential and the status service never recorded an enrollment. A long but fitting one works
// and its QR holds the URI.
func TestSubTooLongForQR(t *testing.T) {
	srv := natstest.Start(t)
	p := &peers{}
	startPeers(t, srv, p)
	base := startInitiation(t, srv)

	for _, sub := range []string{strings.Repeat("x", 10_000), strings.Repeat("y", 1200), strings.Repeat("é", 400)} {
		status, out := post(t, base+"/verification-srv/v2/setup/initiate/totp", sub)
		if status != http.StatusBadRequest || out["code"] != "bad_request" || !strings.Contains(out["detail"].(string), "too long") {
			t.Fatalf("sub of %d bytes: %d %v", len(sub), status, out)
		}
	}
	p.mu.Lock()
	if len(p.registry) != 0 || len(p.status) != 0 {
		t.Fatalf("asked for a refused sub: registry %d, status %d", len(p.registry), len(p.status))
	}
	p.mu.Unlock()

	long := strings.Repeat("z", 900)
	status, out := post(t, base+"/verification-srv/v2/setup/initiate/totp", long)
	if status != http.StatusOK {
		t.Fatalf("sub of 900 bytes: %d %v", status, out)
	}
	if got := decodeQR(t, out["qr_code"].(string)); got != out["otpauth_uri"] {
		t.Fatalf("QR encodes %q, want the otpauth URI", got)
	}
}
