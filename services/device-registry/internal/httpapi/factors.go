package httpapi

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/mfaflow/mfaflow/pkg/auth"
	"github.com/mfaflow/mfaflow/pkg/fault"
	"github.com/mfaflow/mfaflow/pkg/httpx"
	"github.com/mfaflow/mfaflow/pkg/ratelimit"
	"github.com/mfaflow/mfaflow/services/device-registry/internal/device"
)

// Factors is what the recovery-code and admin routes need of the domain.
type Factors interface {
	GenerateRecoveryCodes(ctx context.Context, sub string) ([]string, device.RecoverySet, error)
	RecoveryStatus(ctx context.Context, sub string) (device.RecoverySet, error)
	Unlock(ctx context.Context, sub, actor string) error
	LockStatus(ctx context.Context, sub string) (device.Lockout, error)
	RemoveAsAdmin(ctx context.Context, sub, phid, actor string) error
	ResetFactors(ctx context.Context, sub, actor string) (device.Reset, error)
	Rekey(ctx context.Context, after string, limit int) (device.RekeyResult, error)
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
	Sub string `json:"sub"`
	lockStateDTO
}

// lockStateDTO is the lock itself, as the lockout route and the factors listing show it.
type lockStateDTO struct {
	Locked         bool       `json:"locked"`
	LockedUntil    *time.Time `json:"locked_until,omitempty"`
	FailedAttempts int        `json:"failed_attempts"`
}

// factorsDTO is the answer of GET /verification-srv/admin/users/{sub}/factors: everything a
// user has to sign in with, as an administrator sees it (never a secret or a code).
type factorsDTO struct {
	Sub           string            `json:"sub"`
	Devices       []deviceDTO       `json:"devices"`
	RecoveryCodes recoveryStatusDTO `json:"recovery_codes"`
	Lockout       lockStateDTO      `json:"lockout"`
}

func (a *API) factorRoutes(rt *httpx.Router) {
	rt.HandleFunc("POST /verification-srv/backupcodes", a.generateRecoveryCodes)
	rt.HandleFunc("GET /verification-srv/backupcodes", a.recoveryStatus)
	rt.HandleFunc("GET /verification-srv/admin/users/{sub}/lockout", a.lockStatus)
	rt.HandleFunc("DELETE /verification-srv/admin/users/{sub}/lockout", a.unlock)
	rt.HandleFunc("GET /verification-srv/admin/users/{sub}/factors", a.listFactors)
	rt.HandleFunc("DELETE /verification-srv/admin/users/{sub}/factors", a.resetFactors)
	rt.HandleFunc("DELETE /verification-srv/admin/users/{sub}/factors/{ph_id}", a.removeFactor)
	rt.HandleFunc("POST /verification-srv/admin/secrets/rekey", a.rekey)
}

type rekeyBody struct {
	After string `json:"after"`
	Limit int    `json:"limit"`
}

type rekeyDTO struct {
	Scanned int    `json:"scanned"`
	Rekeyed int    `json:"rekeyed"`
	Next    string `json:"next,omitempty"`
}

// rekey re-seals one page of credentials with the current secret key (MFA_SECRET_KEYS
// rotation); call again with "after": next until next is absent.
func (a *API) rekey(w http.ResponseWriter, r *http.Request) {
	id, err := auth.Identify(a.verifier, r, false)
	if err == nil && !id.HasScope(auth.ScopeAdmin) {
		err = fault.New(fault.Forbidden, "this route needs scope "+auth.ScopeAdmin)
	}
	var body rekeyBody
	if err == nil {
		err = httpx.DecodeJSON(w, r, &body, true)
	}
	if err == nil && (len(body.After) > 128 || body.Limit < 0 || body.Limit > 1000) {
		err = fault.New(fault.BadRequest, "after is a ph_id (at most 128 characters) and limit 0 to 1000")
	}
	if err != nil {
		a.fail(w, r, err)
		return
	}
	res, err := a.factors.Rekey(r.Context(), body.After, body.Limit)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	httpx.WriteJSON(w, http.StatusOK, rekeyDTO{Scanned: res.Scanned, Rekeyed: res.Rekeyed, Next: res.Next})
}

func (a *API) generateRecoveryCodes(w http.ResponseWriter, r *http.Request) {
	sub, err := a.user(r)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	// Each set replaces the last: a stolen session must not churn them (and the store) in a loop.
	if ok, wait := a.userLimit.Allow(ratelimit.Key(sub)); !ok {
		w.Header().Set("Retry-After", ratelimit.RetryAfter(wait))
		a.fail(w, r, fault.New(fault.TooManyRequests, "too many recovery-code sets generated; wait for Retry-After"))
		return
	}
	if err := a.devices.RequireStepUp(r.Context(), sub, r.Header.Get(auth.StepUpHeader)); err != nil {
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
	sub, err := a.user(r)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	d, err := a.recoveryOf(r.Context(), sub)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	httpx.WriteJSON(w, http.StatusOK, d)
}

// recoveryOf is sub's recovery-code status; a user without a set has 0 remaining.
func (a *API) recoveryOf(ctx context.Context, sub string) (recoveryStatusDTO, error) {
	set, err := a.factors.RecoveryStatus(ctx, sub)
	if errors.Is(err, device.ErrNotFound) {
		return recoveryStatusDTO{}, nil
	}
	if err != nil {
		return recoveryStatusDTO{}, err
	}
	t := set.CreatedAt.UTC()
	return recoveryStatusDTO{Remaining: set.Remaining(), CreatedAt: &t}, nil
}

// lockOf is sub's lock now.
func (a *API) lockOf(ctx context.Context, sub string) (lockStateDTO, error) {
	l, err := a.factors.LockStatus(ctx, sub)
	if err != nil {
		return lockStateDTO{}, err
	}
	d := lockStateDTO{FailedAttempts: l.Failures}
	if !l.LockedUntil.IsZero() {
		t := l.LockedUntil.UTC()
		d.Locked, d.LockedUntil = true, &t
	}
	return d, nil
}

// admin authenticates an administrator (scope mfa:admin) and returns the user named in the path
// and the administrator (the token's sub, the actor of what the route does).
func (a *API) admin(r *http.Request) (sub, actor string, err error) {
	id, err := auth.Identify(a.verifier, r, false)
	if err != nil {
		return "", "", err
	}
	if !id.HasScope(auth.ScopeAdmin) {
		return "", "", fault.New(fault.Forbidden, "this route needs scope "+auth.ScopeAdmin)
	}
	if id.Sub == "" {
		return "", "", fault.New(fault.Unauthorized, "the token names no subject")
	}
	sub = r.PathValue("sub")
	if sub == "" || len(sub) > maxSubBytes {
		return "", "", fault.New(fault.BadRequest, "the user's sub is missing or too long")
	}
	return sub, id.Sub, nil
}

// maxSubBytes bounds a sub named in a path, as initiation bounds it in a body.
const maxSubBytes = 256

func (a *API) lockStatus(w http.ResponseWriter, r *http.Request) {
	sub, _, err := a.admin(r)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	l, err := a.lockOf(r.Context(), sub)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	httpx.WriteJSON(w, http.StatusOK, lockoutDTO{Sub: sub, lockStateDTO: l})
}

func (a *API) unlock(w http.ResponseWriter, r *http.Request) {
	sub, actor, err := a.admin(r)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	if err := a.factors.Unlock(r.Context(), sub, actor); err != nil {
		a.fail(w, r, err)
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusNoContent)
}

func (a *API) listFactors(w http.ResponseWriter, r *http.Request) {
	sub, _, err := a.admin(r)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	cs, err := a.devices.List(r.Context(), sub)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	d := factorsDTO{Sub: sub, Devices: make([]deviceDTO, 0, len(cs))}
	for _, c := range cs {
		d.Devices = append(d.Devices, toDTO(c))
	}
	if d.RecoveryCodes, err = a.recoveryOf(r.Context(), sub); err != nil {
		a.fail(w, r, err)
		return
	}
	if d.Lockout, err = a.lockOf(r.Context(), sub); err != nil {
		a.fail(w, r, err)
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	httpx.WriteJSON(w, http.StatusOK, d)
}

func (a *API) removeFactor(w http.ResponseWriter, r *http.Request) {
	sub, actor, err := a.admin(r)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	if err := a.factors.RemoveAsAdmin(r.Context(), sub, r.PathValue("ph_id"), actor); err != nil {
		a.fail(w, r, err)
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusNoContent)
}

func (a *API) resetFactors(w http.ResponseWriter, r *http.Request) {
	sub, actor, err := a.admin(r)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	if _, err := a.factors.ResetFactors(r.Context(), sub, actor); err != nil {
		a.fail(w, r, err)
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusNoContent)
}
