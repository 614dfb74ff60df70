package httpapi

import (
	"errors"
	"math"
	"net/http"
	"strconv"
	"time"

	"github.com/mfaflow/mfaflow/pkg/fault"
	"github.com/mfaflow/mfaflow/pkg/httpx"
	"github.com/mfaflow/mfaflow/services/status/internal/faults"
)

// writeError answers err as problem+json: the one place the HTTP adapter answers an error. A
// refusal that ends at a known time (locked, too many pushes) also gets Retry-After.
func (a *API) writeError(w http.ResponseWriter, r *http.Request, err error) {
	err = faults.Of(err)
	var fe *fault.Error
	if errors.As(err, &fe) && !fe.Until.IsZero() {
		w.Header().Set("Retry-After", retryAfter(fe.Until.Sub(a.now())))
	}
	httpx.WriteError(w, r, a.Log, err)
}

// now is the domain's clock.
func (a *API) now() time.Time { return a.Enrollments.Time() }

// Not-found answers, each in its aggregate's words.
var (
	// errNoSuchEnrollment also answers a status id that names nothing (or that cannot exist).
	errNoSuchEnrollment = fault.New(fault.NotFound, "no such enrollment")
	errNoSuchSignIn     = fault.New(fault.NotFound, "no such sign-in")
)

// retryAfter is a Retry-After value in whole seconds, at least 1.
func retryAfter(wait time.Duration) string {
	return strconv.Itoa(max(int(math.Ceil(wait.Seconds())), 1))
}
