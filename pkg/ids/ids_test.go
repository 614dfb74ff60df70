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

// TestStatusIDFor holds the derivation to RFC 9562's version 5 UUID (the vector is
// github.com/google/uuid's NewSHA1 in the same namespace): services that name or find
// enrollments by it must agree on every byte.
func TestStatusIDFor(t *testing.T) {
	const exchangeID = "0f8fad5b-d9cb-469f-a165-70867728950e"
	if got, want := ids.StatusIDFor(exchangeID), "f519c870-e3b6-5c76-b472-334d15fb2901"; got != want {
		t.Fatalf("StatusIDFor(%s) = %s, want %s", exchangeID, got, want)
	}
	if ids.StatusIDFor(exchangeID) == ids.StatusIDFor("1"+exchangeID[1:]) {
		t.Fatal("two exchange ids give one status id")
	}
	if !ids.Valid(ids.StatusIDFor(exchangeID)) {
		t.Fatal("a derived status id is not a valid id")
	}
}
