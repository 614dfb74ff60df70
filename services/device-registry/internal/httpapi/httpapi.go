// Package httpapi is the registry's HTTP face for frontends: the user's devices under
// /device-srv/devices (list, rename, remove), cidaas-compatible.
//
// Every route authenticates the Bearer token and acts only on the caller's own devices. Domain
// errors become problem+json responses in one place (toFault).
package httpapi

import (
	"context"
	"errors"
	"log/slog"
	"net/http"

	"github.com/mfaflow/mfaflow/pkg/auth"
	"github.com/mfaflow/mfaflow/pkg/factor"
	"github.com/mfaflow/mfaflow/pkg/fault"
	"github.com/mfaflow/mfaflow/pkg/httpx"
	"github.com/mfaflow/mfaflow/pkg/ratelimit"
	"github.com/mfaflow/mfaflow/services/device-registry/internal/device"
)

// Devices is what the HTTP adapter needs of the domain.
type Devices interface {
	List(ctx context.Context, sub string) ([]device.Credential, error)
	Rename(ctx context.Context, sub, phid, name string) (device.Credential, error)
	Remove(ctx context.Context, sub, phid string) error
	// RequireStepUp spends the step-up proof a factor change of sub needs (none for a user
	// without a factor, or with step-up off).
	RequireStepUp(ctx context.Context, sub, token string) error
}

var _ Devices = (*device.Service)(nil)

// API serves the device routes.
type API struct {
	devices Devices
	factors Factors
	users   Users
	// confirmURL is the frontend page a disable link opens (MFA_DISABLE_CONFIRM_URL).
	confirmURL string
	verifier   auth.Verifier
	log        *slog.Logger
	// userLimit limits the recovery-code sets and disable links one user asks for
	// (MFA_USER_START_RATE); nil means unlimited.
	userLimit *ratelimit.Limiter
}

// New returns an API on devices that authenticates callers with verifier and limits each
// user's recovery-code sets with userLimit (nil: unlimited).
//
// users answers the MFA state and disable routes; confirmURL is the page a disable link opens.
func New(devices Devices, factors Factors, users Users, confirmURL string, verifier auth.Verifier, userLimit *ratelimit.Limiter, log *slog.Logger) *API {
	return &API{devices: devices, factors: factors, users: users, confirmURL: confirmURL, verifier: verifier, userLimit: userLimit, log: log}
}

// Routes registers the device routes on rt.
func (a *API) Routes(rt *httpx.Router) {
	rt.HandleFunc("GET /device-srv/devices", a.list)
	rt.HandleFunc("PATCH /device-srv/devices/{ph_id}", a.rename)
	rt.HandleFunc("DELETE /device-srv/devices/{ph_id}", a.remove)
	a.factorRoutes(rt)
	a.mfaRoutes(rt)
}

func (a *API) list(w http.ResponseWriter, r *http.Request) {
	sub, err := a.user(r)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	cs, err := a.devices.List(r.Context(), sub)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	out := make([]deviceDTO, 0, len(cs))
	for _, c := range cs {
		out = append(out, toDTO(c))
	}
	httpx.WriteJSON(w, http.StatusOK, out)
}

func (a *API) rename(w http.ResponseWriter, r *http.Request) {
	sub, err := a.user(r)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	var body renameRequest
	if err := httpx.DecodeJSON(w, r, &body, false); err != nil {
		a.fail(w, r, err)
		return
	}
	if body.FriendlyName == nil {
		a.fail(w, r, fault.New(fault.BadRequest, "friendly_name is required"))
		return
	}
	c, err := a.devices.Rename(r.Context(), sub, r.PathValue("ph_id"), *body.FriendlyName)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	httpx.WriteJSON(w, http.StatusOK, toDTO(c))
}

func (a *API) remove(w http.ResponseWriter, r *http.Request) {
	sub, err := a.user(r)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	if err := a.devices.RequireStepUp(r.Context(), sub, r.Header.Get(auth.StepUpHeader)); err != nil {
		a.fail(w, r, err)
		return
	}
	if err := a.devices.Remove(r.Context(), sub, r.PathValue("ph_id")); err != nil {
		a.fail(w, r, err)
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusNoContent)
}

// fail answers err as a problem; httpx.WriteError logs what is not a known fault.
func (a *API) fail(w http.ResponseWriter, r *http.Request, err error) {
	httpx.WriteError(w, r, a.log, toFault(err))
}

// toFault is the one place where domain errors become HTTP problems. Errors that already are
// faults (authentication, body decoding) pass through; anything unknown stays as it is and is
// answered as a bare 500.
func toFault(err error) error {
	var ie *device.InvalidError
	switch {
	case errors.As(err, &ie):
		return fault.New(fault.BadRequest, ie.Reason)
	case errors.Is(err, device.ErrInvalid):
		return fault.New(fault.BadRequest, "malformed request")
	case errors.Is(err, device.ErrNotFound):
		return fault.New(fault.NotFound, "no such device")
	case errors.Is(err, device.ErrStepUpRequired):
		return fault.New(fault.StepUpRequired, "no "+auth.StepUpHeader+": "+fault.StepUpHint)
	case errors.Is(err, device.ErrConflict), errors.Is(err, device.ErrStale):
		return fault.New(fault.Conflict, "the device changed concurrently; try again")
	case errors.Is(err, device.ErrNoContact):
		return fault.New(fault.NoContact, "there is no email address to send the confirmation link to: enroll an EMAIL factor, or confirm with X-MFA-Token ("+fault.StepUpHint+")")
	case errors.Is(err, device.ErrLinkExpired):
		return fault.New(fault.Expired, "the link has expired or was used; ask for a new one")
	case errors.Is(err, factor.ErrNoFactor):
		return fault.New(fault.NoFactor, "the user has no active factor of this method")
	case errors.Is(err, device.ErrMethodInactive):
		return fault.New(fault.MethodInactive, "this deployment cannot send email now")
	}
	return err
}
