package setup_test

import (
	"strings"
	"testing"

	"github.com/mfaflow/mfaflow/pkg/totp"
	"github.com/mfaflow/mfaflow/services/initiation/internal/qr"
	"github.com/mfaflow/mfaflow/services/initiation/internal/setup"
)

// TestMaxURIBytesIsWhatTheQRHolds holds MaxURIBytes to internal/qr: an URI-like text of exactly that
// many bytes renders, one byte more does not.
func TestMaxURIBytesIsWhatTheQRHolds(t *testing.T) {
	uri := "otpauth://totp/x?sub="
	fits := uri + strings.Repeat("a", setup.MaxURIBytes-len(uri))
	if _, err := qr.PNGDataURI(fits); err != nil {
		t.Fatalf("%d bytes: %v", len(fits), err)
	}
	if _, err := qr.SVG(fits); err != nil {
		t.Fatalf("svg, %d bytes: %v", len(fits), err)
	}
	if _, err := qr.PNGDataURI(fits + "a"); err == nil {
		t.Fatalf("%d bytes rendered; MaxURIBytes is too small", len(fits)+1)
	}
}

// The length check assumes no secret is longer than 103 base32 characters (64 bytes).
func TestSecretsFitTheWorstCase(t *testing.T) {
	s, err := totp.NewSecret()
	if err != nil {
		t.Fatal(err)
	}
	if len(s) > 103 {
		t.Fatalf("secrets are %d characters; raise worstCredential", len(s))
	}
}
