package device_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/mfaflow/mfaflow/services/device-registry/internal/device"
)

// A credential that ends up in a log line or a test failure must not carry its sealed secret.
func TestCredentialFormatHidesSecret(t *testing.T) {
	c := device.Credential{PHID: "ph-1", StatusID: "st-1", SealedSecret: []byte("SEALED-BYTES")}
	for _, verb := range []string{"%v", "%+v", "%s"} {
		out := fmt.Sprintf(verb, c)
		if strings.Contains(out, "SEALED") || strings.Contains(out, fmt.Sprint(c.SealedSecret)) {
			t.Errorf("%s shows the sealed secret: %s", verb, out)
		}
		if !strings.Contains(out, "ph-1") {
			t.Errorf("%s lost the ph_id: %s", verb, out)
		}
	}
}

func TestInvalidErrorIsErrInvalid(t *testing.T) {
	err := fmt.Errorf("wrapped: %w", &device.InvalidError{Reason: "friendly_name must not be empty"})
	if !errors.Is(err, device.ErrInvalid) {
		t.Fatal("InvalidError does not match ErrInvalid")
	}
	var ie *device.InvalidError
	if !errors.As(err, &ie) || ie.Reason != "friendly_name must not be empty" {
		t.Fatalf("reason lost: %v", err)
	}
}
