package httpapi

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/mfaflow/mfaflow/pkg/auth"
	"github.com/mfaflow/mfaflow/pkg/fault"
	"github.com/mfaflow/mfaflow/pkg/httpx"
	"github.com/mfaflow/mfaflow/services/device-registry/internal/device"
)

// Factors is what the recovery-code and admin routes need of the domain.
type Factors interface {
	GenerateRecoveryCodes(ctx context.Context, sub string) ([]string, device.RecoverySet, error)
	RecoveryStatus(ctx context.Context, sub string) (device.RecoverySet, error)
	Unlock(ctx context.Context, sub string) error
	LockStatus(ctx context.Context, sub string) (device.Lockout, error)
}

var _ Factors = (*device.Service)(nil)

// recoveryCodesDTO is the answer of POST /verification-srv/backupcodes: the only time the
// codes are ever shown.
type recoveryCodesDTO struct {
	Codes     []string  `json:"codes"`
	CreatedAt time.Time `json:"created_at"`
}

// recoveryStatusDTO is the answer of GET /verification-srv/backupcodes.
type recoveryStatusDTO struct {
	Remaining int        `json:"remaining"`
	CreatedAt *time.Time `json:"created_at,omitempty"`
}

// lockoutDTO is a user's lock as an administrator sees it.
type lockoutDTO struct {
	Sub            string     `json:"sub"`
	Locked         bool       `json:"locked"`
	LockedUntil    *time.Time `json:"locked_until,omitempty"`
	FailedAttempts int        `json:"failed_attempts"`
}

func (a *API) factorRoutes(rt *httpx.Router) {
	rt.HandleFunc("POST /verification-srv/backupcodes", a.generateRecoveryCodes)
	rt.HandleFunc("GET /verification-srv/backupcodes", a.recoveryStatus)
	rt.HandleFunc("GET /verification-srv/admin/users/{sub}/lockout", a.lockStatus)
	rt.HandleFunc("DELETE /verification-srv/admin/users/{sub}/lockout", a.unlock)
}

func (a *API) generateRecoveryCodes(w http.ResponseWriter, r *http.Request) {
	sub, err := auth.Authenticate(a.verifier, r, false)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	codes, set, err := a.factors.GenerateRecoveryCodes(r.Context(), sub)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	httpx.WriteJSON(w, http.StatusCreated, recoveryCodesDTO{Codes: codes, CreatedAt: set.CreatedAt.UTC()})
}

func (a *API) recoveryStatus(w http.ResponseWriter, r *http.Request) {
	sub, err := auth.Authenticate(a.verifier, r, false)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	set, err := a.factors.RecoveryStatus(r.Context(), sub)
	if errors.Is(err, device.ErrNotFound) {
		httpx.WriteJSON(w, http.StatusOK, recoveryStatusDTO{})
		return
	}
	if err != nil {
		a.fail(w, r, err)
		return
	}
	t := set.CreatedAt.UTC()
	httpx.WriteJSON(w, http.StatusOK, recoveryStatusDTO{Remaining: set.Remaining(), CreatedAt: &t})
}

// admin authenticates an administrator (scope mfa:admin) and returns the user named in the path.
func (a *API) admin(r *http.Request) (string, error) {
	id, err := auth.Identify(a.verifier, r, false)
	if err != nil {
		return "", err
	}
	if !id.HasScope(auth.ScopeAdmin) {
		return "", fault.New(fault.Forbidden, "this route needs scope "+auth.ScopeAdmin)
	}
	sub := r.PathValue("sub")
	if sub == "" || len(sub) > maxSubBytes {
		return "", fault.New(fault.BadRequest, "the user's sub is missing or too long")
	}
	return sub, nil
}

// maxSubBytes bounds a sub named in a path, as initiation bounds it in a body.
const maxSubBytes = 256

func (a *API) lockStatus(w http.ResponseWriter, r *http.Request) {
	sub, err := a.admin(r)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	l, err := a.factors.LockStatus(r.Context(), sub)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	d := lockoutDTO{Sub: sub, FailedAttempts: l.Failures}
	if !l.LockedUntil.IsZero() {
		t := l.LockedUntil.UTC()
		d.Locked, d.LockedUntil = true, &t
	}
	httpx.WriteJSON(w, http.StatusOK, d)
}

func (a *API) unlock(w http.ResponseWriter, r *http.Request) {
	sub, err := a.admin(r)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	if err := a.factors.Unlock(r.Context(), sub); err != nil {
		a.fail(w, r, err)
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusNoContent)
}
