// Package httpapi is the status service's HTTP adapter: polling an enrollment, completing it
// with a typed code, and cancelling it. Every route needs a Bearer token; a user only ever sees
// their own enrollments (another user's is 404, so ids cannot be probed).
//
// It builds its status objects from the domain (ToDTO), maps the domain's errors in one place
// (problem.go), leaves who gets an mfa_token to package signin, and imports no other adapter:
// live changes reach it through the Subscriber it declares.
package httpapi

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/mfaflow/mfaflow/events/method"
	"github.com/mfaflow/mfaflow/pkg/auth"
	"github.com/mfaflow/mfaflow/pkg/factor"
	"github.com/mfaflow/mfaflow/pkg/fault"
	"github.com/mfaflow/mfaflow/pkg/httpx"
	"github.com/mfaflow/mfaflow/pkg/ids"
	"github.com/mfaflow/mfaflow/pkg/ratelimit"
	"github.com/mfaflow/mfaflow/services/status/internal/enrollment"
	"github.com/mfaflow/mfaflow/services/status/internal/mfatoken"
	"github.com/mfaflow/mfaflow/services/status/internal/signin"
)

// API serves the status routes.
type API struct {
	// Enrollments and SignIns are the two aggregates; the status routes serve both (status.go).
	Enrollments *enrollment.Service
	SignIns     *signin.Service
	Verifier    auth.Verifier
	Log         *slog.Logger
	// Live delivers changes made by any replica to the streaming routes.
	Live Subscriber
	// Heartbeat is the idle interval of live streams; 0 means DefaultHeartbeat.
	Heartbeat time.Duration
	// PollLimit limits polls per user and enrollment; nil means unlimited.
	PollLimit *ratelimit.Limiter
	// StartLimit limits the sign-ins started per user (the user a service token names); nil
	// means unlimited.
	StartLimit *ratelimit.Limiter
	// StreamLimit bounds the live streams (SSE and websocket together) open per user; nil means
	// unlimited.
	StreamLimit *ratelimit.Slots
	// Tokens signs the mfa_token of authentications and serves the JWKS; nil means none.
	Tokens *mfatoken.Signer
	// VerificationTTL bounds an authentication; 0 means DefaultVerificationTTL.
	VerificationTTL time.Duration
	// WebAuthn says the passkey settings can work (pkg/config.WebAuthn); without, the webauthn
	// routes answer 409 method_inactive.
	WebAuthn bool
}

// errPasskeysInactive answers the webauthn routes where the passkey settings cannot work.
var errPasskeysInactive = fault.New(fault.MethodInactive, "passkeys are not available in this deployment (its WebAuthn relying party is not usable: MFA_WEBAUTHN_RP_ID must be a domain name, not an IP address)")

// passkeyRoute refuses a webauthn route where passkeys are inactive.
func (a *API) passkeyRoute(m method.Method) error {
	if m.SignIn == method.Assertion && !a.WebAuthn {
		return errPasskeysInactive
	}
	return nil
}

// credentialJSON checks that a passkey request carries the browser's credential object.
func credentialJSON(c json.RawMessage) ([]byte, error) {
	if t := bytes.TrimSpace(c); len(t) == 0 || t[0] != '{' {
		return nil, fault.New(fault.BadRequest, "credential is required: the PublicKeyCredential as credential.toJSON() gives it")
	}
	return c, nil
}

// Routes registers the routes on rt.
func (a *API) Routes(rt *httpx.Router) {
	rt.HandleFunc("GET /verification-srv/verificationstatus/{status_id}", a.authed(a.get))
	rt.HandleFunc("DELETE /verification-srv/verificationstatus/{status_id}", a.authed(a.cancel))
	rt.HandleFunc("POST /verification-srv/v2/setup/enroll/{type}", a.authed(a.enroll))
	rt.HandleFunc("POST /verification-srv/v2/setup/resend/{type}", a.authed(a.resendEnrollment))
	rt.HandleFunc("GET /verification-srv/verificationstatus/{status_id}/events", a.events)
	rt.HandleFunc("GET /verification-srv/verificationstatus/{status_id}/ws", a.ws)
	a.authenticationRoutes(rt)
}

// StatusDTO is the status object of the HTTP API (cidaas shape).
type StatusDTO struct {
	Status    string    `json:"status"`
	ID        string    `json:"id"`
	Sub       string    `json:"sub"`
	Type      string    `json:"type"`
	ExpiresAt time.Time `json:"expires_at"`
	UpdatedAt time.Time `json:"updated_at"`
	DeviceID  string    `json:"device_id,omitempty"`
	PHID      string    `json:"ph_id,omitempty"`
	// Destination (masked) and Delivery (pending, sent, failed) of an EMAIL or SMS code.
	Destination string `json:"destination,omitempty"`
	Delivery    string `json:"delivery,omitempty"`
	// MFAToken is the mfa_token of an AUTHENTICATED authentication, for its initiator only.
	MFAToken string `json:"mfa_token,omitempty"`
	// Seq orders versions of the status object (its write sequence); it is the SSE event id and
	// part of the ETag, not a field of the body.
	Seq uint64 `json:"-"`
}

// enrollmentDTO converts an enrollment to its HTTP status object: device_id and ph_id once
// ENROLLED.
func enrollmentDTO(e enrollment.Enrollment) StatusDTO {
	d := StatusDTO{
		Status: string(e.State), ID: e.ID, Sub: e.Sub, Type: e.Method,
		ExpiresAt: e.ExpiresAt, UpdatedAt: e.UpdatedAt, Seq: e.Seq,
		Destination: e.Sent.Destination, Delivery: e.Sent.Delivery,
	}
	if e.State == enrollment.Enrolled {
		d.DeviceID, d.PHID = e.DeviceID, e.PHID
	}
	return d
}

// signInDTO converts a sign-in to its HTTP status object: ph_id of the device that answered
// (AUTHENTICATED, DENIED). The mfa_token is added for its initiator only (mfaToken).
func signInDTO(a signin.Authentication) StatusDTO {
	d := StatusDTO{
		Status: string(a.State), ID: a.ID, Sub: a.Sub, Type: a.Method,
		ExpiresAt: a.ExpiresAt, UpdatedAt: a.UpdatedAt, Seq: a.Seq,
		Destination: a.Sent.Destination, Delivery: a.Sent.Delivery,
	}
	if a.State == signin.Authenticated || a.State == signin.Denied {
		d.PHID = a.PHID
	}
	return d
}

// ETag identifies one version of a status object, for conditional polls: the write sequence
// changes with every write, whichever replica's clock stamped it.
func ETag(d StatusDTO) string {
	b := make([]byte, 0, len(d.ID)+len(d.Status)+24)
	b = append(b, '"')
	b = append(b, d.ID...)
	b = append(b, '-')
	b = append(b, d.Status...)
	b = append(b, '-')
	b = strconv.AppendUint(b, d.Seq, 10)
	b = append(b, '"')
	return string(b)
}

type authedHandler func(w http.ResponseWriter, r *http.Request, caller caller) error

func (a *API) authed(h authedHandler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		caller, err := a.caller(r, false)
		if err == nil {
			err = h(w, r, caller)
		}
		if err != nil {
			a.writeError(w, r, err)
		}
	}
}

// caller is who sent a request: the subject and client id of the Bearer token, and whether it
// is a service token (scope mfa:verify) acting for the users it names. Each aggregate takes
// what it needs of it.
type caller struct {
	sub, clientID string
	service       bool
}

func (c caller) enrollment() enrollment.Caller { return enrollment.Caller{Sub: c.sub} }
func (c caller) signIn() signin.Caller {
	return signin.Caller{Sub: c.sub, ClientID: c.clientID, Service: c.service}
}

// caller authenticates r's Bearer token (or access_token, when allowQuery).
func (a *API) caller(r *http.Request, allowQuery bool) (caller, error) {
	id, err := auth.Identify(a.Verifier, r, allowQuery)
	if err != nil {
		return caller{}, err
	}
	return callerOf(id), nil
}

func callerOf(id auth.Identity) caller {
	return caller{sub: id.Sub, clientID: id.ClientID, service: id.HasScope(auth.ScopeVerify)}
}

// statusID is the {status_id} of r, checked before it is used as a subject, a key or a limiter
// key: an id no status object can have is 404, like an unknown one.
func statusID(r *http.Request) (string, error) {
	id := r.PathValue("status_id")
	if !ids.Valid(id) {
		return "", errNoSuchEnrollment
	}
	return id, nil
}

func (a *API) get(w http.ResponseWriter, r *http.Request, caller caller) error {
	id, err := statusID(r)
	if err != nil {
		return err
	}
	if a.PollLimit != nil {
		if ok, wait := a.PollLimit.Allow(pollKey(caller.sub, id)); !ok {
			w.Header().Set("Retry-After", retryAfter(wait))
			return fault.New(fault.TooManyRequests, "polling too fast; wait for Retry-After or subscribe to /events")
		}
	}
	st, err := a.status(r.Context(), id, caller)
	if err != nil {
		return err
	}
	tag := ETag(st.dto)
	h := w.Header()
	h["Etag"] = []string{tag}
	if match := r.Header.Get("If-None-Match"); match != "" && etagMatches(match, tag) {
		h["Cache-Control"] = []string{"no-store"}
		w.WriteHeader(http.StatusNotModified)
		return nil
	}
	writeStatus(w, a.withToken(r, st, caller))
	return nil
}

// pollKey is the limiter key of one user polling one status object: a fixed-size digest, so a
// token with a huge sub claim cannot make the limiter hold huge keys.
func pollKey(sub, id string) string {
	sum := sha256.Sum256([]byte(sub + "\x00" + id))
	return string(sum[:16])
}

func etagMatches(header, tag string) bool {
	if header == tag {
		return true
	}
	for t := range strings.SplitSeq(header, ",") {
		t = strings.TrimPrefix(strings.TrimSpace(t), "W/")
		if t == tag || t == "*" {
			return true
		}
	}
	return false
}

func (a *API) cancel(w http.ResponseWriter, r *http.Request, caller caller) error {
	id, err := statusID(r)
	if err != nil {
		return err
	}
	d, err := a.cancelStatus(r.Context(), id, caller)
	if err != nil {
		return err
	}
	httpx.WriteJSON(w, http.StatusOK, d)
	return nil
}

type enrollBody struct {
	ExchangeID       string `json:"exchange_id"`
	VerificationCode string `json:"verification_code"`
	// FriendlyName names the device when the code is typed into the frontend.
	FriendlyName string `json:"friendly_name"`
	// Credential is a passkey's registration response (WEBAUTHN: credential.toJSON()), in
	// place of verification_code.
	Credential json.RawMessage `json:"credential"`
}

// resendBody asks for a new code of an EMAIL or SMS exchange.
type resendBody struct {
	ExchangeID string `json:"exchange_id"`
}

// resendDTO answers a resend: when the next one may be asked for.
type resendDTO struct {
	ResendAfter time.Time `json:"resend_after"`
}

// sentMethod is the registered method of a {type} or {method} segment whose codes are sent.
func sentMethod(segment string) (method.Method, error) {
	m, ok := method.ByRoute(segment)
	if !ok || m.Channel == "" {
		return method.Method{}, fault.New(fault.NotFound, "codes are sent for "+strings.Join(method.Routes(func(m method.Method) bool { return m.Channel != "" }), " and ")+" only")
	}
	return m, nil
}

// readResend reads a resend's body: the exchange id, or errNotThere for one that cannot exist.
func readResend(w http.ResponseWriter, r *http.Request, errNotThere error) (string, error) {
	var body resendBody
	if err := httpx.DecodeJSON(w, r, &body, false); err != nil {
		return "", err
	}
	if body.ExchangeID == "" {
		return "", fault.New(fault.BadRequest, "exchange_id is required")
	}
	if !ids.Valid(body.ExchangeID) {
		return "", errNotThere
	}
	return body.ExchangeID, nil
}

func writeResent(w http.ResponseWriter, sent factor.Sent) {
	w.Header().Set("Cache-Control", "no-store")
	httpx.WriteJSON(w, http.StatusAccepted, resendDTO{ResendAfter: sent.SentAt.Add(factor.ResendInterval)})
}

// resendEnrollment sends a new code for an EMAIL or SMS enrollment.
func (a *API) resendEnrollment(w http.ResponseWriter, r *http.Request, caller caller) error {
	m, err := sentMethod(r.PathValue("type"))
	if err != nil {
		return err
	}
	exchangeID, err := readResend(w, r, errNoSuchEnrollment)
	if err != nil {
		return err
	}
	e, err := a.Enrollments.Resend(r.Context(), exchangeID, caller.sub, m.Name)
	if err != nil {
		return err
	}
	writeResent(w, e.Sent)
	return nil
}

func (a *API) enroll(w http.ResponseWriter, r *http.Request, caller caller) error {
	sub := caller.sub
	m, ok := method.ByRoute(r.PathValue("type"))
	if !ok || !m.Enrolls {
		return fault.New(fault.NotFound, "unsupported verification type; use "+strings.Join(method.Routes(func(m method.Method) bool { return m.Enrolls }), ", "))
	}
	if err := a.passkeyRoute(m); err != nil {
		return err
	}
	var body enrollBody
	if err := httpx.DecodeJSON(w, r, &body, false); err != nil {
		return err
	}
	if body.ExchangeID == "" {
		return fault.New(fault.BadRequest, "exchange_id is required")
	}
	if !ids.Valid(body.ExchangeID) {
		return errNoSuchEnrollment
	}
	if m.SignIn == method.Assertion {
		cred, err := credentialJSON(body.Credential)
		if err != nil {
			return err
		}
		e, err := a.Enrollments.Enroll(r.Context(), enrollment.EnrollInput{
			ExchangeID: body.ExchangeID, Credential: cred, Sub: sub, Method: m.Name, Channel: enrollment.ChannelFrontend,
		})
		if err != nil {
			return err
		}
		httpx.WriteJSON(w, http.StatusOK, enrollmentDTO(e))
		return nil
	}
	if body.VerificationCode == "" {
		return fault.New(fault.BadRequest, "verification_code is required")
	}
	e, err := a.Enrollments.Enroll(r.Context(), enrollment.EnrollInput{
		ExchangeID: body.ExchangeID, Code: strings.TrimSpace(body.VerificationCode), Sub: sub, Method: m.Name,
		Device: enrollment.Device{Name: body.FriendlyName}, Channel: enrollment.ChannelFrontend,
	})
	if err != nil {
		return err
	}
	httpx.WriteJSON(w, http.StatusOK, enrollmentDTO(e))
	return nil
}
