package httpapi

import (
	"context"
	"errors"
	"net/http"

	"github.com/mfaflow/mfaflow/services/status/internal/enrollment"
	"github.com/mfaflow/mfaflow/services/status/internal/signin"
)

// The status routes (GET and DELETE /verificationstatus/{status_id}, /events, /ws) serve both
// aggregates under one status id: this file is where they dispatch by kind. An id is looked up
// as an enrollment first, then as a sign-in (each store finds only its own kind, so at most one
// answers); an id that is neither is the enrollment's not-found, as it always was.

// statusObject is a status object as the status routes serve it.
type statusObject struct {
	dto StatusDTO
	// signIn is the sign-in the object is, nil for an enrollment: its mfa_token is minted from it.
	signIn *signin.Authentication
}

// status reads status object id as caller may see it.
func (a *API) status(ctx context.Context, id string, c caller) (statusObject, error) {
	e, err := a.Enrollments.Get(ctx, id, c.enrollment())
	if err == nil {
		return statusObject{dto: enrollmentDTO(e)}, nil
	}
	if !errors.Is(err, enrollment.ErrNotFound) || a.SignIns == nil {
		return statusObject{}, err
	}
	s, serr := a.SignIns.Get(ctx, id, c.signIn())
	if errors.Is(serr, signin.ErrNotFound) {
		return statusObject{}, err
	}
	if serr != nil {
		return statusObject{}, serr
	}
	return statusObject{dto: signInDTO(s), signIn: &s}, nil
}

// cancelStatus cancels status object id for caller.
func (a *API) cancelStatus(ctx context.Context, id string, c caller) (StatusDTO, error) {
	e, err := a.Enrollments.Cancel(ctx, id, c.enrollment())
	if err == nil {
		return enrollmentDTO(e), nil
	}
	if !errors.Is(err, enrollment.ErrNotFound) || a.SignIns == nil {
		return StatusDTO{}, err
	}
	s, serr := a.SignIns.Cancel(ctx, id, c.signIn())
	if errors.Is(serr, signin.ErrNotFound) {
		return StatusDTO{}, err
	}
	if serr != nil {
		return StatusDTO{}, serr
	}
	return signInDTO(s), nil
}

// withToken is st's status object with the mfa_token of an AUTHENTICATED sign-in for its
// initiator.
func (a *API) withToken(r *http.Request, st statusObject, c caller) StatusDTO {
	d := st.dto
	if st.signIn != nil {
		d.MFAToken = a.mfaToken(r, *st.signIn, c.signIn())
	}
	return d
}

// final reports whether status is terminal in either aggregate's state machine (a live
// announcement says the status, not the kind).
func final(status string) bool {
	return enrollment.State(status).Terminal() || signin.State(status).Terminal()
}
