package factor_test

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/mfaflow/mfaflow/pkg/factor"
)

func TestLockedErrorIsErrLocked(t *testing.T) {
	until := time.Date(2026, 3, 1, 12, 0, 0, 0, time.FixedZone("x", 3600))
	err := fmt.Errorf("authenticate: %w", &factor.LockedError{Until: until})
	if !errors.Is(err, factor.ErrLocked) {
		t.Fatal("a LockedError does not match ErrLocked")
	}
	var locked *factor.LockedError
	if !errors.As(err, &locked) || !locked.Until.Equal(until) {
		t.Fatalf("until lost: %v", err)
	}
	if got, want := locked.Error(), "code checks locked until 2026-03-01T11:00:00Z"; got != want {
		t.Fatalf("Error() = %q, want %q", got, want)
	}
	if errors.Is(err, factor.ErrInvalidCode) {
		t.Fatal("a LockedError matches ErrInvalidCode")
	}
}
