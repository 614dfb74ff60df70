package commands_test

import (
	"testing"

	"github.com/mfaflow/mfaflow/events/commands"
)

// TestStatusIDFor holds the derivation to RFC 9562's version 5 UUID (the vector is
// github.com/google/uuid's NewSHA1 in the same namespace): services that name or find
// enrollments by it must agree on every byte.
func TestStatusIDFor(t *testing.T) {
	const exchangeID = "0f8fad5b-d9cb-469f-a165-70867728950e"
	if got, want := commands.StatusIDFor(exchangeID), "f519c870-e3b6-5c76-b472-334d15fb2901"; got != want {
		t.Fatalf("StatusIDFor(%s) = %s, want %s", exchangeID, got, want)
	}
	if commands.StatusIDFor(exchangeID) == commands.StatusIDFor("1"+exchangeID[1:]) {
		t.Fatal("two exchange ids give one status id")
	}
}
