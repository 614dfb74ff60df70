package faults

import (
	"fmt"
	"testing"

	"github.com/mfaflow/mfaflow/pkg/fault"
	"github.com/mfaflow/mfaflow/services/status/internal/enrollment"
	"github.com/mfaflow/mfaflow/services/status/internal/signin"
)

// Each aggregate's errors are answered in its own words, with the same problem codes.
func TestProblemWording(t *testing.T) {
	for name, tc := range map[string]struct {
		err    error
		code   fault.Code
		detail string
	}{
		"EnrollmentNotFound": {enrollment.ErrNotFound, fault.NotFound, "no such enrollment"},
		"EnrollmentExpired":  {enrollment.ErrExpired, fault.Expired, "the enrollment has expired; start a new one"},
		"SignInNotFound":     {signin.ErrNotFound, fault.NotFound, "no such sign-in"},
		"SignInExpired":      {signin.ErrExpired, fault.Expired, "the sign-in has expired; start a new one"},
		"SignInConflict":     {fmt.Errorf("%w: sign-in is DENIED", signin.ErrConflict), fault.Conflict, "sign-in is DENIED"},
		"SignInStale":        {signin.ErrStale, fault.Conflict, "the sign-in is changing concurrently; retry"},
		"SignInBadRequest":   {fmt.Errorf("%w: decision must be approve or deny", signin.ErrBadRequest), fault.BadRequest, "decision must be approve or deny"},
		"TooManyPushes":      {&signin.TooManyPushesError{}, fault.TooManyRequests, "too many push sign-ins for this user; wait for Retry-After"},
	} {
		fe := fault.From(Of(tc.err))
		if fe.Code != tc.code || fe.Message != tc.detail {
			t.Errorf("%s: %s %q, want %s %q", name, fe.Code, fe.Message, tc.code, tc.detail)
		}
	}
}
