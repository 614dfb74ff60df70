package httpapi

import (
	"context"
	"net/http"
	"time"

	"github.com/mfaflow/mfaflow/pkg/auth"
	"github.com/mfaflow/mfaflow/pkg/fault"
	"github.com/mfaflow/mfaflow/pkg/httpx"
	"github.com/mfaflow/mfaflow/pkg/ratelimit"
	"github.com/mfaflow/mfaflow/services/device-registry/internal/device"
)

// Users is what the MFA state and disable routes need of the domain.
type Users interface {
	MFAState(ctx context.Context, sub string) (device.State, error)
	SetDefaultMethod(ctx context.Context, sub, name string) (device.State, error)
	RequestDisable(ctx context.Context, sub, stepUpToken, confirmURL string) (device.Disabled, error)
	ConfirmDisable(ctx context.Context, sub, token string) (device.Reset, error)
	RememberClaims(ctx context.Context, sub, email string, emailVerified bool, locale string) error
}

var _ Users = (*device.Service)(nil)

// stateDTO is GET /verification-srv/mfa (UCloud `connected`, Rackspace `multiFactorEnabled` and
// `factorType`).
type stateDTO struct {
	Enabled                bool       `json:"enabled"`
	Methods                []string   `json:"methods"`
	DefaultMethod          string     `json:"default_method,omitempty"`
	Factors                int        `json:"factors"`
	RecoveryCodesRemaining int        `json:"recovery_codes_remaining"`
	Contact                string     `json:"contact,omitempty"`
	LockedUntil            *time.Time `json:"locked_until,omitempty"`
}

func toStateDTO(st device.State) stateDTO {
	d := stateDTO{Enabled: st.Enabled, Methods: st.Methods, DefaultMethod: st.DefaultMethod, Factors: st.Factors,
		RecoveryCodesRemaining: st.RecoveryCodesRemaining, Contact: st.Contact}
	if d.Methods == nil {
		d.Methods = []string{}
	}
	if !st.LockedUntil.IsZero() {
		t := st.LockedUntil.UTC()
		d.LockedUntil = &t
	}
	return d
}

// disableDTO answers a disable that waits for the emailed link.
type disableDTO struct {
	Confirmation string    `json:"confirmation"`
	ExpiresAt    time.Time `json:"expires_at"`
}

type defaultMethodRequest struct {
	DefaultMethod string `json:"default_method"`
}

type confirmRequest struct {
	Token string `json:"token"`
}

func (a *API) mfaRoutes(rt *httpx.Router) {
	rt.HandleFunc("GET /verification-srv/mfa", a.mfaState)
	rt.HandleFunc("PUT /verification-srv/mfa", a.setDefaultMethod)
	rt.HandleFunc("POST /verification-srv/mfa/disable", a.disable)
	rt.HandleFunc("POST /verification-srv/mfa/disable/confirm", a.confirmDisable)
	rt.HandleFunc("GET /verification-srv/admin/users/{sub}/mfa", a.adminMFAState)
}

// user authenticates a user's request and remembers what the token says about reaching them
// (a verified email, the locale): the contact of security notifications.
func (a *API) user(r *http.Request) (string, error) {
	id, err := auth.Identify(a.verifier, r, false)
	if err != nil {
		return "", err
	}
	if id.Sub == "" {
		return "", fault.New(fault.Unauthorized, "the token names no subject")
	}
	if a.users != nil && (id.Email != "" || id.Locale != "") {
		if err := a.users.RememberClaims(r.Context(), id.Sub, id.Email, id.EmailVerified, id.Locale); err != nil {
			a.log.Warn("remember the token's contact claims", "err", err) // the request goes on
		}
	}
	return id.Sub, nil
}

func (a *API) writeState(w http.ResponseWriter, st device.State) {
	w.Header().Set("Cache-Control", "no-store")
	httpx.WriteJSON(w, http.StatusOK, toStateDTO(st))
}

func (a *API) mfaState(w http.ResponseWriter, r *http.Request) {
	sub, err := a.user(r)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	st, err := a.users.MFAState(r.Context(), sub)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	a.writeState(w, st)
}

func (a *API) adminMFAState(w http.ResponseWriter, r *http.Request) {
	sub, _, err := a.admin(r)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	st, err := a.users.MFAState(r.Context(), sub)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	a.writeState(w, st)
}

func (a *API) setDefaultMethod(w http.ResponseWriter, r *http.Request) {
	sub, err := a.user(r)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	var body defaultMethodRequest
	if err := httpx.DecodeJSON(w, r, &body, false); err != nil {
		a.fail(w, r, err)
		return
	}
	if body.DefaultMethod == "" {
		a.fail(w, r, fault.New(fault.BadRequest, "default_method is required"))
		return
	}
	st, err := a.users.SetDefaultMethod(r.Context(), sub, body.DefaultMethod)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	a.writeState(w, st)
}

func (a *API) disable(w http.ResponseWriter, r *http.Request) {
	sub, err := a.user(r)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	proof := r.Header.Get(auth.StepUpHeader)
	if proof == "" {
		// Each request mails a link: bound them per user, as the other initiations are.
		if ok, wait := a.userLimit.Allow(ratelimit.Key(sub)); !ok {
			w.Header().Set("Retry-After", ratelimit.RetryAfter(wait))
			a.fail(w, r, fault.New(fault.TooManyRequests, "too many disable links asked for; wait for Retry-After"))
			return
		}
	}
	d, err := a.users.RequestDisable(r.Context(), sub, proof, a.confirmURL)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	if !d.Done {
		w.Header().Set("Cache-Control", "no-store")
		httpx.WriteJSON(w, http.StatusAccepted, disableDTO{Confirmation: "email", ExpiresAt: d.ExpiresAt})
		return
	}
	a.answerState(w, r, sub)
}

func (a *API) confirmDisable(w http.ResponseWriter, r *http.Request) {
	sub, err := a.user(r)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	var body confirmRequest
	if err := httpx.DecodeJSON(w, r, &body, false); err != nil {
		a.fail(w, r, err)
		return
	}
	if body.Token == "" {
		a.fail(w, r, fault.New(fault.BadRequest, "token is required"))
		return
	}
	if _, err := a.users.ConfirmDisable(r.Context(), sub, body.Token); err != nil {
		a.fail(w, r, err)
		return
	}
	a.answerState(w, r, sub)
}

// answerState answers a finished disable with the user's state, which now says enabled false.
func (a *API) answerState(w http.ResponseWriter, r *http.Request, sub string) {
	st, err := a.users.MFAState(r.Context(), sub)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	a.writeState(w, st)
}
