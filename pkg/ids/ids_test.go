package ids_test

import (
	"strings"
	"testing"

	"github.com/mfaflow/mfaflow/pkg/ids"
)

func TestValid(t *testing.T) {
	for _, id := range []string{"5f0c9a4e-3d1b-4c57-9e2a-8b6f1d7c2a90", "5F0C9A4E-3D1B-4C57-9E2A-8B6F1D7C2A90", "a", "st_1-x", strings.Repeat("a", ids.MaxLen)} {
		if !ids.Valid(id) {
			t.Errorf("Valid(%q) = false", id)
		}
	}
	for _, id := range []string{"", strings.Repeat("a", ids.MaxLen+1), "a b", "*", ">", "x.y.z", "\r\nx", "é", "a/b", "a\x00b"} {
		if ids.Valid(id) {
			t.Errorf("Valid(%.20q) = true", id)
		}
	}
}
