// Package httpapi is the initiation service's HTTP adapter: the method list and the two
// initiation routes (cidaas's v2 route and its verification-actions alias).
package httpapi

import (
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/mfaflow/mfaflow/events/method"
	"github.com/mfaflow/mfaflow/pkg/auth"
	"github.com/mfaflow/mfaflow/pkg/fault"
	"github.com/mfaflow/mfaflow/pkg/httpx"
	"github.com/mfaflow/mfaflow/pkg/ratelimit"
	"github.com/mfaflow/mfaflow/services/initiation/internal/setup"
)

// API serves the initiation routes.
type API struct {
	Service  *setup.Service
	Verifier auth.Verifier
	Log      *slog.Logger
	// StartLimit limits the enrollments one user starts (both routes, one bucket per user);
	// nil means unlimited.
	StartLimit *ratelimit.Limiter
}

// Routes registers the routes on rt.
func (a *API) Routes(rt *httpx.Router) {
	rt.HandleFunc("GET /verification-srv/config/list", a.methods)
	rt.HandleFunc("POST /verification-srv/v2/setup/initiate/{type}", a.initiate)
	rt.HandleFunc("POST /verification-actions-srv/setup/{type}/initiation", a.initiate)
}

type methodDTO struct {
	VerificationType string `json:"verificationType"`
	Active           bool   `json:"active"`
}

func (a *API) methods(w http.ResponseWriter, r *http.Request) {
	if _, err := auth.Authenticate(a.Verifier, r, false); err != nil {
		httpx.WriteError(w, r, a.Log, err)
		return
	}
	var out []methodDTO
	for _, m := range a.Service.Methods(r.Context()) {
		out = append(out, methodDTO{VerificationType: m.Type, Active: m.Active})
	}
	httpx.WriteJSON(w, http.StatusOK, out)
}

// initiateBody is cidaas's optional request body; deviceInfo is accepted for compatibility.
//
// EMAIL takes the address in email; SMS the number in phone (E.164, or national with region,
// an ISO 3166 code such as DE).
type initiateBody struct {
	DeviceInfo map[string]any `json:"deviceInfo"`
	Email      string         `json:"email"`
	Phone      string         `json:"phone"`
	Region     string         `json:"region"`
	// FriendlyName names a passkey (WEBAUTHN); optional.
	FriendlyName string `json:"friendly_name"`
}

type exchangeDTO struct {
	ExchangeID string    `json:"exchange_id"`
	ExpiresAt  time.Time `json:"expires_at"`
}

// InitiateDTO is the initiation response. It is the only response that ever holds the secret.
type InitiateDTO struct {
	ExchangeID            exchangeDTO `json:"exchange_id"`
	AuthenticatorClientID string      `json:"authenticator_client_id"`
	Sub                   string      `json:"sub"`
	StatusID              string      `json:"status_id"`
	TOTPSecret            string      `json:"totp_secret,omitempty"`
	OTPAuthURI            string      `json:"otpauth_uri,omitempty"`
	QRCode                string      `json:"qr_code,omitempty"`
	// Type is the method enrolled; Destination is where an EMAIL or SMS code went, masked.
	Type        string `json:"type,omitempty"`
	Destination string `json:"destination,omitempty"`
	// PublicKey is a passkey enrollment's PublicKeyCredentialCreationOptions, in the JSON form
	// PublicKeyCredential.parseCreationOptionsFromJSON reads (base64url fields).
	PublicKey json.RawMessage `json:"public_key,omitempty"`
}

func (a *API) initiate(w http.ResponseWriter, r *http.Request) {
	id, err := auth.Identify(a.Verifier, r, false)
	if err != nil {
		httpx.WriteError(w, r, a.Log, err)
		return
	}
	sub := id.Sub
	var format setup.QRFormat
	switch q := r.URL.Query().Get("qr"); q {
	case "", "png":
		format = setup.QRPNG
	case "svg":
		format = setup.QRSVG
	case "none":
		format = setup.QRNone
	default:
		httpx.WriteProblem(w, r, fault.New(fault.BadRequest, "qr must be png, svg or none"))
		return
	}
	var body initiateBody
	if err := httpx.DecodeJSON(w, r, &body, true); err != nil {
		httpx.WriteError(w, r, a.Log, err)
		return
	}
	key, _, err := httpx.IdempotencyKey(r)
	if err != nil {
		httpx.WriteError(w, r, a.Log, err)
		return
	}
	// A stolen session must not mint enrollments (each a secret and a store write) in a loop.
	if ok, wait := a.StartLimit.Allow(ratelimit.Key(sub)); !ok {
		w.Header().Set("Retry-After", ratelimit.RetryAfter(wait))
		httpx.WriteProblem(w, r, fault.New(fault.TooManyRequests, "too many enrollments started; wait for Retry-After"))
		return
	}
	f, err := factorOf(r.PathValue("type"), body)
	if err != nil {
		httpx.WriteError(w, r, a.Log, err)
		return
	}
	f.Locale = id.Locale // the language of the code's message
	if id.EmailVerified {
		f.ContactEmail = id.Email
	}
	in, err := a.Service.Initiate(r.Context(), r.PathValue("type"), sub, format, key, r.Header.Get(auth.StepUpHeader), f)
	if reused, ok := errors.AsType[*setup.KeyReusedError](err); ok {
		w.Header().Set("Location", "/verification-srv/verificationstatus/"+reused.StatusID)
		err = fault.New(fault.Conflict, "this Idempotency-Key already started enrollment "+reused.StatusID+", which is now "+reused.State+"; start a new enrollment with a new key")
	}
	if errors.Is(err, setup.ErrUnsupportedMethod) {
		enrollable := method.Routes(func(m method.Method) bool { return m.Enrolls })
		err = fault.New(fault.NotFound, "unsupported verification type: "+strings.Join(enrollable, ", ")+" can be enrolled here (recovery codes come from POST /verification-srv/backupcodes)")
	}
	if errors.Is(err, setup.ErrMethodInactive) {
		err = fault.New(fault.MethodInactive, inactiveReason(r.PathValue("type")))
	}
	if errors.Is(err, setup.ErrSubTooLong) {
		err = fault.New(fault.BadRequest, "the user id (sub claim) is too long to fit in a QR code")
	}
	if err != nil {
		httpx.WriteError(w, r, a.Log, err)
		return
	}
	w.Header().Set("Location", "/verification-srv/verificationstatus/"+in.StatusID)
	httpx.WriteJSON(w, http.StatusOK, InitiateDTO{
		ExchangeID:            exchangeDTO{ExchangeID: in.ExchangeID, ExpiresAt: in.ExpiresAt},
		AuthenticatorClientID: in.ClientID,
		Sub:                   in.Sub,
		StatusID:              in.StatusID,
		TOTPSecret:            in.Secret,
		OTPAuthURI:            in.URI,
		QRCode:                in.QRCode,
		Type:                  sentType(in),
		Destination:           in.Destination,
		PublicKey:             in.PublicKey,
	})
}

// inactiveReason words method_inactive for the method of route.
func inactiveReason(route string) string {
	if m, ok := method.ByRoute(route); ok && m.Name == method.WebAuthn {
		return "passkeys are not available in this deployment (its WebAuthn relying party is not usable: MFA_WEBAUTHN_RP_ID must be a domain name, not an IP address)"
	}
	return "this deployment cannot send codes of this method now (no mail server or SMS provider configured)"
}

// sentType is the type of an EMAIL or SMS enrollment's answer; TOTP answers keep their shape.
func sentType(in setup.Initiated) string {
	if in.Destination == "" && in.PublicKey == nil {
		return ""
	}
	return in.Method
}

// factorOf reads where the codes of an EMAIL or SMS enrollment go; the registry checks and
// normalises the address.
func factorOf(route string, body initiateBody) (setup.Factor, error) {
	m, ok := method.ByRoute(route)
	if !ok {
		return setup.Factor{}, nil // Initiate answers unsupported methods
	}
	switch m.Name {
	case method.Email:
		if strings.TrimSpace(body.Email) == "" {
			return setup.Factor{}, fault.New(fault.BadRequest, "email is required")
		}
		return setup.Factor{Address: body.Email}, nil
	case method.SMS:
		if strings.TrimSpace(body.Phone) == "" {
			return setup.Factor{}, fault.New(fault.BadRequest, "phone is required (E.164, or national with region)")
		}
		return setup.Factor{Address: body.Phone, Region: body.Region}, nil
	case method.WebAuthn:
		return setup.Factor{FriendlyName: body.FriendlyName}, nil
	}
	return setup.Factor{}, nil
}
