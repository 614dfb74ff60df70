package httpapi

import (
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/mfaflow/mfaflow/events/method"
	"github.com/mfaflow/mfaflow/pkg/auth"
	"github.com/mfaflow/mfaflow/pkg/fault"
	"github.com/mfaflow/mfaflow/pkg/httpx"
	"github.com/mfaflow/mfaflow/pkg/ids"
	"github.com/mfaflow/mfaflow/pkg/ratelimit"
	"github.com/mfaflow/mfaflow/services/status/internal/mfatoken"
	"github.com/mfaflow/mfaflow/services/status/internal/signin"
)

// The usage_type of an authentication initiation: a sign-in's second factor (cidaas), or a
// signed-in user proving a factor again before changing factors (its mfa_token then goes in
// X-MFA-Token). Both run the same way; the usage only tells what the sign-in is for.
const (
	UsageMFA    = "MULTIFACTOR_AUTHENTICATION"
	UsageStepUp = "STEP_UP"
)

// Bounds of what a relying app may say about a sign-in.
const (
	maxSubBytes          = 256
	maxContextValueRunes = 256
)

// contextKeys are the sign-in context fields kept; others are dropped, so nothing unexpected
// (a code pasted into the wrong field) reaches the store or an event.
var contextKeys = []string{"app", "ip", "user_agent", "location"}

type initiationBody struct {
	UsageType string            `json:"usage_type"`
	Sub       string            `json:"sub"`
	Context   map[string]string `json:"context"`
	// PHID picks the factor an EMAIL or SMS code goes to (default: the one used most recently).
	PHID string `json:"ph_id"`
}

type exchangeDTO struct {
	ExchangeID string    `json:"exchange_id"`
	ExpiresAt  time.Time `json:"expires_at"`
}

type initiationDTO struct {
	ExchangeID exchangeDTO `json:"exchange_id"`
	StatusID   string      `json:"status_id"`
	Sub        string      `json:"sub"`
	// Number is the two-digit number a push sign-in's frontend shows (push only): the user
	// picks it among the three the device offers.
	Number string `json:"number,omitempty"`
	// Destination is where an EMAIL or SMS code went, masked.
	Destination string `json:"destination,omitempty"`
	// PublicKey is a passkey sign-in's PublicKeyCredentialRequestOptions, in the JSON form
	// PublicKeyCredential.parseRequestOptionsFromJSON reads (base64url fields).
	PublicKey json.RawMessage `json:"public_key,omitempty"`
}

type verificationBody struct {
	ExchangeID string `json:"exchange_id"`
	PassCode   string `json:"pass_code"`
	// Credential is a passkey sign-in's assertion (WEBAUTHN: credential.toJSON()), in place of
	// pass_code.
	Credential json.RawMessage `json:"credential"`
	// Sub, without ExchangeID, makes a single-step verification (a service token with
	// mfa:verify): the sign-in is started and finished by this one request.
	Sub string `json:"sub"`
}

type verificationDTO struct {
	Status   string `json:"status"`
	StatusID string `json:"status_id"`
	Sub      string `json:"sub"`
	Method   string `json:"method"`
	PHID     string `json:"ph_id,omitempty"`
	MFAToken string `json:"mfa_token,omitempty"`
}

// authenticationRoutes registers sign-in verification and the JWKS.
func (a *API) authenticationRoutes(rt *httpx.Router) {
	rt.HandleFunc("POST /verification-srv/authentication/{method}/initiation", a.identified(a.initiateAuthentication))
	rt.HandleFunc("POST /verification-srv/authentication/{method}/verification", a.identified(a.verifyAuthentication))
	rt.HandleFunc("POST /verification-srv/authentication/{method}/resend", a.identified(a.resendAuthentication))
	if a.Tokens != nil {
		rt.Handle("GET /.well-known/jwks.json", a.Tokens.Handler())
	}
}

type identifiedHandler func(w http.ResponseWriter, r *http.Request, id auth.Identity) error

func (a *API) identified(h identifiedHandler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		id, err := auth.Identify(a.Verifier, r, false)
		if err == nil {
			err = h(w, r, id)
		}
		if err != nil {
			a.writeError(w, r, err)
		}
	}
}

// authMethod is the registered method named by the {method} of a route (events/method).
func authMethod(r *http.Request) (string, error) {
	if m, ok := method.ByRoute(r.PathValue("method")); ok {
		return m.Name, nil
	}
	return "", fault.New(fault.NotFound, "unsupported method; use "+strings.Join(method.Routes(nil), ", "))
}

func (a *API) initiateAuthentication(w http.ResponseWriter, r *http.Request, id auth.Identity) error {
	name, err := authMethod(r)
	if err != nil {
		return err
	}
	if err := a.passkeyMethod(name); err != nil {
		return err
	}
	var body initiationBody
	if err := httpx.DecodeJSON(w, r, &body, true); err != nil {
		return err
	}
	switch body.UsageType {
	case "", UsageMFA, UsageStepUp:
	default:
		return fault.New(fault.BadRequest, "usage_type must be "+UsageMFA+" or "+UsageStepUp)
	}
	body.Sub = strings.TrimSpace(body.Sub)
	if len(body.Sub) > maxSubBytes {
		return fault.New(fault.BadRequest, "sub must be at most 256 bytes")
	}
	sub, err := id.ActingFor(body.Sub)
	if err != nil {
		return err
	}
	// Per user, not per caller: a service token starting sign-ins for many users must not be
	// stopped by one of them, nor one user's sign-ins escape the limit through a service.
	if ok, wait := a.StartLimit.Allow(ratelimit.Key(sub)); !ok {
		w.Header().Set("Retry-After", ratelimit.RetryAfter(wait))
		return fault.New(fault.TooManyRequests, "too many sign-ins started for this user; wait for Retry-After")
	}
	sctx, err := signInContext(body.Context)
	if err != nil {
		return err
	}
	// The status id is derived from the exchange id, as for enrollments: the verification finds
	// the sign-in by its exchange id with one read, and the store keeps no exchange index for it.
	exchangeID := uuid.NewString()
	in := signin.NewAuthentication{
		ID: ids.StatusIDFor(exchangeID), ExchangeID: exchangeID, Sub: sub, Initiator: id.Sub,
		Method: name, ClientID: id.ClientID, Service: id.HasScope(auth.ScopeVerify), Context: sctx, TTL: a.verificationTTL(),
		PHID: strings.TrimSpace(body.PHID), Locale: id.Locale,
	}
	if in.PHID != "" && !ids.Valid(in.PHID) {
		return fault.New(fault.BadRequest, "ph_id is malformed")
	}
	if key, keyed, err := httpx.IdempotencyKey(r); err != nil {
		return err
	} else if keyed {
		if in.ID, in.ExchangeID, err = a.SignIns.KeyedIDs(name, sub, key); err != nil {
			return err
		}
		in.Keyed = true
	}
	e, err := a.SignIns.Start(r.Context(), in)
	if err != nil {
		return err
	}
	w.Header().Set("Cache-Control", "no-store")
	httpx.WriteJSON(w, http.StatusOK, initiationDTO{
		ExchangeID: exchangeDTO{ExchangeID: e.ExchangeID, ExpiresAt: e.ExpiresAt},
		StatusID:   e.ID, Sub: e.Sub, Number: e.Number, Destination: e.Sent.Destination, PublicKey: e.PublicKey,
	})
	return nil
}

// resendAuthentication sends a new code for an EMAIL or SMS sign-in.
func (a *API) resendAuthentication(w http.ResponseWriter, r *http.Request, id auth.Identity) error {
	m, err := sentMethod(r.PathValue("method"))
	if err != nil {
		return err
	}
	exchangeID, err := readResend(w, r, errNoSuchSignIn)
	if err != nil {
		return err
	}
	e, err := a.SignIns.Resend(r.Context(), exchangeID, m.Name, callerOf(id).signIn(), id.Locale)
	if err != nil {
		return err
	}
	writeResent(w, e.Sent)
	return nil
}

func signInContext(in map[string]string) (map[string]string, error) {
	var out map[string]string
	for _, k := range contextKeys {
		v, ok := in[k]
		if !ok || v == "" {
			continue
		}
		if utf8.RuneCountInString(v) > maxContextValueRunes || !utf8.ValidString(v) {
			return nil, fault.New(fault.BadRequest, "context."+k+" must be valid text of at most 256 characters")
		}
		if out == nil {
			out = map[string]string{}
		}
		out[k] = v
	}
	return out, nil
}

func (a *API) verifyAuthentication(w http.ResponseWriter, r *http.Request, id auth.Identity) error {
	name, err := authMethod(r)
	if err != nil {
		return err
	}
	if err := a.passkeyMethod(name); err != nil {
		return err
	}
	var body verificationBody
	if err := httpx.DecodeJSON(w, r, &body, false); err != nil {
		return err
	}
	if m, _ := method.ByName(name); m.SignIn == method.Assertion {
		if body.ExchangeID == "" {
			return fault.New(fault.BadRequest, "exchange_id is required")
		}
		if !ids.Valid(body.ExchangeID) {
			return errNoSuchSignIn
		}
		cred, err := credentialJSON(body.Credential)
		if err != nil {
			return err
		}
		body.PassCode = string(cred)
	}
	if body.ExchangeID == "" && body.Sub != "" {
		return a.verifyOnce(w, r, id, name, body)
	}
	if body.ExchangeID == "" {
		return fault.New(fault.BadRequest, "exchange_id is required (or, for a service token with "+auth.ScopeVerify+", sub for a single-step verification)")
	}
	if !ids.Valid(body.ExchangeID) {
		return errNoSuchSignIn
	}
	if strings.TrimSpace(body.PassCode) == "" {
		return fault.New(fault.BadRequest, "pass_code is required")
	}
	caller := callerOf(id).signIn()
	e, err := a.SignIns.Verify(r.Context(), body.ExchangeID, name, caller, body.PassCode)
	if err != nil {
		return err
	}
	w.Header().Set("Cache-Control", "no-store")
	httpx.WriteJSON(w, http.StatusOK, verificationDTO{
		Status: string(e.State), StatusID: e.ID, Sub: e.Sub, Method: e.Method, PHID: e.PHID,
		MFAToken: a.mfaToken(r, e, caller),
	})
	return nil
}

// passkeyMethod refuses the webauthn sign-in routes where passkeys are inactive.
func (a *API) passkeyMethod(name string) error {
	m, _ := method.ByName(name)
	return a.passkeyRoute(m)
}

// verifyOnce is the single-step verification: a login service (scope mfa:verify) sends sub and
// the user's code, and gets the sign-in's outcome and mfa_token in one round trip.
func (a *API) verifyOnce(w http.ResponseWriter, r *http.Request, id auth.Identity, name string, body verificationBody) error {
	if !id.HasScope(auth.ScopeVerify) {
		return fault.New(fault.Forbidden, "a single-step verification (sub without exchange_id) needs a service token with scope "+auth.ScopeVerify)
	}
	sub := strings.TrimSpace(body.Sub)
	if len(sub) > maxSubBytes {
		return fault.New(fault.BadRequest, "sub must be at most 256 bytes")
	}
	if strings.TrimSpace(body.PassCode) == "" {
		return fault.New(fault.BadRequest, "pass_code is required")
	}
	if ok, wait := a.StartLimit.Allow(ratelimit.Key(sub)); !ok {
		w.Header().Set("Retry-After", ratelimit.RetryAfter(wait))
		return fault.New(fault.TooManyRequests, "too many sign-ins started for this user; wait for Retry-After")
	}
	exchangeID := uuid.NewString()
	e, err := a.SignIns.VerifyOnce(r.Context(), signin.NewAuthentication{
		ID: ids.StatusIDFor(exchangeID), ExchangeID: exchangeID, Sub: sub, Initiator: id.Sub,
		Method: name, ClientID: id.ClientID, Service: true, TTL: a.verificationTTL(),
	}, body.PassCode)
	if err != nil {
		return err
	}
	caller := callerOf(id).signIn()
	w.Header().Set("Cache-Control", "no-store")
	httpx.WriteJSON(w, http.StatusOK, verificationDTO{
		Status: string(e.State), StatusID: e.ID, Sub: e.Sub, Method: e.Method, PHID: e.PHID,
		MFAToken: a.mfaToken(r, e, caller),
	})
	return nil
}

func (a *API) verificationTTL() time.Duration {
	if a.VerificationTTL > 0 {
		return a.VerificationTTL
	}
	return DefaultVerificationTTL
}

// DefaultVerificationTTL bounds a sign-in when the configuration names no other.
const DefaultVerificationTTL = 5 * time.Minute

// mfaToken is the mfa_token of e for caller, or "" when caller gets none (signin.TokenClaims
// decides), there is no signer, or the token's lifetime is over.
func (a *API) mfaToken(r *http.Request, e signin.Authentication, caller signin.Caller) string {
	if a.Tokens == nil {
		return ""
	}
	c, ok := signin.TokenClaims(e, caller)
	if !ok {
		return ""
	}
	tok, err := a.Tokens.Mint(mfatoken.Claims{
		Sub: c.Sub, Audience: c.Audience, StatusID: c.StatusID, JTI: c.JTI, AMR: c.AMR, AuthTime: c.AuthTime,
	})
	if err != nil {
		if !errors.Is(err, mfatoken.ErrExpired) {
			a.Log.Error("mint mfa_token", "status_id", e.ID, "err", err, "path", r.URL.Path)
		}
		return ""
	}
	return tok
}
