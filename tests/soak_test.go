package tests_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	crand "crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mfaflow/mfaflow/events"
	"github.com/mfaflow/mfaflow/events/protocol"
	"github.com/mfaflow/mfaflow/mobile-bridge/companion"
	"github.com/mfaflow/mfaflow/pkg/auth"
	"github.com/mfaflow/mfaflow/pkg/devinbox"
	"github.com/mfaflow/mfaflow/pkg/mongotest"
	"github.com/mfaflow/mfaflow/pkg/natsx"
	"github.com/mfaflow/mfaflow/pkg/totp"
	"github.com/nats-io/nats.go/jetstream"
)

// The soak: a 3-node NATS JetStream cluster and two replicas of every service (the notifier
// included), each a process of its own, N users enrolling an email address with a mailed code
// and signing in with another (the notifiers send to a real SMTP server in the test process,
// pkg/devinbox), then enrolling a push-capable device through the companion protocol with that
// sign-in as step-up proof, signing in with TOTP and then by push, while one replica of every
// service and one NATS node are killed with SIGKILL and started again. It runs once per storage backend: the JetStream KV buckets,
// and MongoDB (MFA_STORE=mongo on MFA_MONGODB_URI, a fresh database per run, else an embedded
// FerretDB, as in tests/mongo_test.go). `make test` runs a short version; `make soak`
// (MFA_SOAK=long) a longer one with two rounds of kills. MFA_SOAK_FLOWS overrides the number of
// flows of both backends.

// soakPlan is the shape of one run.
type soakPlan struct {
	flows, workers, rounds int
	runFor                 time.Duration // bound of the flows' phase
}

// soakBackend is a storage backend the soak runs on.
type soakBackend struct {
	name string
	// env gives the services' variables for it; called once per run.
	env func(t *testing.T) []string
}

var soakBackends = []soakBackend{
	{name: "KV", env: func(*testing.T) []string { return []string{"MFA_STORE=nats"} }},
	{name: "Mongo", env: func(t *testing.T) []string {
		// A fresh database per run (dropped at its end) on the server tests/mongo_test.go uses.
		return []string{"MFA_STORE=mongo", "MFA_MONGODB_URI=" + mongotest.DatabaseURI(t)}
	}},
}

// soakPlanFromEnv sizes the run of one backend. The short run on MongoDB is half the KV one:
// FerretDB on SQLite serialises writes and makes `make test` slower per flow.
func soakPlanFromEnv(t *testing.T, backend string) soakPlan {
	p := soakPlan{flows: 24, workers: 8, rounds: 1, runFor: 5 * time.Minute}
	if backend == "Mongo" {
		p.flows, p.workers = 12, 6
	}
	if os.Getenv("MFA_SOAK") == "long" {
		p = soakPlan{flows: 400, workers: 24, rounds: 2, runFor: 15 * time.Minute}
		if backend == "Mongo" {
			// FerretDB v1 on SQLite (the test server) pushes only a filter on _id alone down to
			// SQLite and applies any other ({_id, v}, pending, exchange_id) in Go over a scan of
			// the collection, so a flow costs more the more flows came before, and it serialises
			// writes: 400 flows at 24 at once queued commands past their 5 s deadline
			// and 400 at 8 at once took 10.6 min with FerretDB saturating both cores. Since each
			// flow also enrolls and signs in by email (twice the writes), 100 flows at 8 at once
			// keep the same topology and kills within the bound, and its figures a measure of the
			// code (150 ran out of time on a loaded machine).
			p.flows, p.workers = 100, 8
		}
	}
	if s := os.Getenv("MFA_SOAK_FLOWS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 4 {
			t.Fatalf("MFA_SOAK_FLOWS=%q: want a whole number >= 4", s)
		}
		p.flows = n
	}
	return p
}

// proc is one process of the soak, started again on the same arguments after a kill. Its
// stdout and stderr go to one log file across restarts.
type proc struct {
	name   string
	path   string
	args   []string
	env    []string
	log    string
	health string // URL answering 200 when the process is ready
	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{}
}

func (p *proc) start(t *testing.T) {
	t.Helper()
	f, err := os.OpenFile(p.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(p.path, p.args...)
	cmd.Env = p.env
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		f.Close()
		t.Fatalf("start %s: %v", p.name, err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		f.Close()
		close(exited)
	}()
	p.mu.Lock()
	p.cmd, p.exited = cmd, exited
	p.mu.Unlock()
}

// kill sends SIGKILL and waits until the process is gone.
func (p *proc) kill(t *testing.T) {
	t.Helper()
	p.mu.Lock()
	cmd, exited := p.cmd, p.exited
	p.mu.Unlock()
	if err := cmd.Process.Kill(); err != nil {
		t.Errorf("kill %s: %v", p.name, err)
	}
	<-exited
}

// waitReady polls the health URL until it answers 200, at most d.
func (p *proc) waitReady(d time.Duration) error {
	end := time.Now().Add(d)
	c := &http.Client{Timeout: time.Second}
	var last error
	for time.Now().Before(end) {
		resp, err := c.Get(p.health)
		if err == nil {
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("%s: %d %s", p.health, resp.StatusCode, bytes.TrimSpace(body))
		}
		last = err
		p.mu.Lock()
		exited := p.exited
		p.mu.Unlock()
		select {
		case <-exited:
			b, _ := os.ReadFile(p.log)
			return fmt.Errorf("%s exited before it was ready; its log ends:\n%s", p.name, b[max(0, len(b)-3000):])
		case <-time.After(50 * time.Millisecond):
		}
	}
	b, _ := os.ReadFile(p.log)
	return fmt.Errorf("%s not ready within %v: %v; its log ends:\n%s", p.name, d, last, b[max(0, len(b)-3000):])
}

// soakStats are the figures of a run, shared by every worker.
type soakStats struct {
	mu           sync.Mutex
	retries      map[string]int // by reason
	undocumented []string
	codes        []string
	secrets      []string
	maxLag       time.Duration
	replays      map[string]int // authentication status id → codes refused as replays
	// refused and unanswered count an email sign-in's verifications with a mailed code that
	// were refused (invalid_code: a code a resend or a retried initiation replaced) or whose
	// answer was lost (perhaps refused), by authentication status id: its verification.failed
	// events are between the two.
	refused, unanswered map[string]int
}

// refusal records a verification of an email sign-in that was refused (definite) or may have
// been (its answer lost).
func (s *soakStats) refusal(statusID string, definite bool) {
	s.mu.Lock()
	if definite {
		s.refused[statusID]++
	} else {
		s.unanswered[statusID]++
	}
	s.mu.Unlock()
}

func (s *soakStats) retry(reason string) {
	s.mu.Lock()
	s.retries[reason]++
	s.mu.Unlock()
}

// lag records how long a poll took to show a state a client had been answered.
func (s *soakStats) lag(d time.Duration) {
	s.mu.Lock()
	s.maxLag = max(s.maxLag, d)
	s.mu.Unlock()
}

// replayed records an authentication whose retried code was refused as a replay.
func (s *soakStats) replayed(statusID string) {
	s.mu.Lock()
	s.replays[statusID]++
	s.mu.Unlock()
}

func (s *soakStats) bad(format string, a ...any) {
	s.mu.Lock()
	s.undocumented = append(s.undocumented, fmt.Sprintf(format, a...))
	s.mu.Unlock()
}

func (s *soakStats) remember(secret string, codes ...string) {
	s.mu.Lock()
	if secret != "" {
		s.secrets = append(s.secrets, secret)
	}
	s.codes = append(s.codes, codes...)
	s.mu.Unlock()
}

// errRetry marks an answer the API documents as "retry": 503 unavailable, 429 with
// Retry-After, a connection error, a bridge `unavailable` frame or a lost connection.
type errRetry struct{ reason string }

func (e errRetry) Error() string { return "retry: " + e.reason }

// soakWorld is the running topology.
type soakWorld struct {
	nats, initiation, status, registry, bridge, notifier []*proc
	jwtKey                                               []byte
	stats                                                *soakStats
	http                                                 *http.Client
	// inbox is the SMTP server the notifiers send to; tap sees every delivery request.
	inbox *devinbox.Inbox
	tap   *deliveryTap
}

func pick(ps []*proc) *proc { return ps[rand.IntN(len(ps))] }

func baseURL(p *proc) string { return strings.TrimSuffix(p.health, "/healthz") }

// call makes one HTTP request and sorts the outcome: nil with the status and body for an answer
// the caller handles, errRetry for a documented transient failure, an error otherwise. hdr are
// more request headers, name and value.
func (w *soakWorld) call(ctx context.Context, method, url, token, idemKey string, body any, hdr ...string) (int, []byte, error) {
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	if idemKey != "" {
		req.Header.Set("Idempotency-Key", idemKey)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := w.http.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return 0, nil, ctx.Err()
		}
		return 0, nil, errRetry{"http connection error"}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, nil, errRetry{"http connection error"}
	}
	var problem struct {
		Code string `json:"code"`
	}
	_ = json.Unmarshal(b, &problem)
	switch {
	case resp.StatusCode == http.StatusServiceUnavailable && problem.Code == "unavailable":
		return 0, nil, errRetry{"http 503 unavailable"}
	case resp.StatusCode == http.StatusTooManyRequests && resp.Header.Get("Retry-After") != "":
		return 0, nil, errRetry{"http 429 " + problem.Code}
	case resp.StatusCode >= 500:
		w.stats.bad("%s %s: %d %s", method, url, resp.StatusCode, b)
		return 0, nil, fmt.Errorf("%s %s: undocumented %d %s", method, url, resp.StatusCode, b)
	}
	return resp.StatusCode, b, nil
}

// retrying runs step until it succeeds, fails for good, or ctx ends; it backs off between
// documented transient failures.
func (w *soakWorld) retrying(ctx context.Context, step string, f func() error) error {
	wait := 25 * time.Millisecond
	for {
		err := f()
		var r errRetry
		if !errors.As(err, &r) {
			if err != nil {
				return fmt.Errorf("%s: %w", step, err)
			}
			return nil
		}
		w.stats.retry(step + ": " + r.reason)
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: gave up: %w (last: %v)", step, ctx.Err(), err)
		case <-time.After(wait + rand.N(wait)):
		}
		wait = min(2*wait, time.Second)
	}
}

// initiate POSTs body to path on either of replicas until it is answered 200, decoded into
// out. Every attempt carries the same fresh Idempotency-Key, as a client that retries an
// initiation whose answer it did not get should: the retry answers the same enrollment or
// authentication.
func (w *soakWorld) initiate(ctx context.Context, step string, replicas []*proc, path, tok string, body, out any) error {
	key := crand.Text()
	return w.retrying(ctx, step, func() error {
		code, b, err := w.call(ctx, http.MethodPost, baseURL(pick(replicas))+path, tok, key, body)
		if err != nil {
			return err
		}
		if code != http.StatusOK {
			return fmt.Errorf("%d %s", code, b)
		}
		return json.Unmarshal(b, out)
	})
}

// bridgeErr sorts a companion error: retry for a documented transient one.
func (w *soakWorld) bridgeErr(err error) error {
	var be *companion.BridgeError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &be) && be.Code == "unavailable":
		return errRetry{"bridge unavailable"}
	case errors.As(err, &be):
		if be.Code == "internal" {
			w.stats.bad("bridge answered internal: %v", err)
		}
		return err
	case errors.Is(err, companion.ErrConnectionLost):
		return errRetry{"bridge connection lost"}
	default:
		// A failed dial (a killed bridge refuses connections) or a write on a dead socket.
		var ne net.Error
		if errors.As(err, &ne) || strings.Contains(err.Error(), "connection refused") || strings.Contains(err.Error(), "dial") ||
			errors.Is(err, io.EOF) || errors.Is(err, companion.ErrClosed) || strings.Contains(err.Error(), "broken pipe") ||
			strings.Contains(err.Error(), "connection reset") {
			return errRetry{"bridge connection error"}
		}
		return err
	}
}

// flowResult is what one user's enrollment and sign-in ended in.
type flowResult struct {
	sub, enrollStatusID, phid, authStatusID, pushStatusID string
	enrolled, authenticated, pushed                       string // final states as the status service says
	// The EMAIL factor: its address, enrollment, factor, sign-in and that sign-in's mfa_token
	// (the step-up proof of the TOTP enrollment), with their final states; stepUpIDs are more
	// email sign-ins made for a fresh proof.
	email, emailEnrollID, emailPHID, emailAuthID, mfaToken string
	emailEnrolled, emailAuthenticated                      string
	stepUpIDs                                              []string
	err                                                    error
}

func (w *soakWorld) token(sub string) string {
	tok, err := auth.HS256{Key: w.jwtKey}.Mint(sub, 10*time.Minute)
	if err != nil {
		panic(err)
	}
	return tok
}

// pollState reads a status object from either status replica.
func (w *soakWorld) pollState(ctx context.Context, tok, statusID string) (statusResponse, error) {
	var s statusResponse
	err := w.retrying(ctx, "poll", func() error {
		code, b, err := w.call(ctx, http.MethodGet, baseURL(pick(w.status))+"/verification-srv/verificationstatus/"+statusID, tok, "", nil)
		if err != nil {
			return err
		}
		if code != http.StatusOK {
			return fmt.Errorf("poll %s: %d %s", statusID, code, b)
		}
		return json.Unmarshal(b, &s)
	})
	return s, err
}

// flow enrolls user i's email address with a mailed code and signs in with another; then,
// with that sign-in as step-up proof, enrolls a device through the companion protocol and signs
// in with the next TOTP step and by push.
func (w *soakWorld) flow(ctx context.Context, i int) flowResult {
	res := flowResult{sub: fmt.Sprintf("soak-user-%03d", i), email: soakAddress(i)}
	tok := w.token(res.sub)
	fail := func(err error) flowResult { res.err = err; return res }

	// 0. The first factor: the email address, enrolled with the code the notifier mailed, and
	// a sign-in with a mailed code, whose mfa_token is the step-up proof of the device.
	if err := w.emailEnroll(ctx, tok, &res); err != nil {
		return fail(err)
	}
	var err error
	if res.emailAuthID, res.mfaToken, err = w.emailSignIn(ctx, tok, res.email, "MULTIFACTOR_AUTHENTICATION"); err != nil {
		return fail(err)
	}

	// 1. Initiate over HTTP against either initiation replica, with one idempotency key for
	// every attempt and the email sign-in's mfa_token as X-MFA-Token.
	var in initiateResponse
	if err := w.initiateTOTPWithStepUp(ctx, tok, &res, &in); err != nil {
		return fail(err)
	}
	res.enrollStatusID = in.StatusID
	w.stats.remember(in.TOTPSecret)
	e, err := companion.ParseURI(in.OTPAuthURI)
	if err != nil {
		return fail(err)
	}

	// 2. Scan and enroll over either bridge replica with a device key (push-capable), dialling
	// again after a lost connection.
	key, err := companion.NewDeviceKey()
	if err != nil {
		return fail(err)
	}
	jwk, err := companion.PublicJWK(&key.PublicKey)
	if err != nil {
		return fail(err)
	}
	dev := protocol.Device{DeviceID: fmt.Sprintf("soak-phone-%03d", i), Name: "Soak phone", Platform: "ios"}
	var ack protocol.Ack
	tries := 0
	if err := w.retrying(ctx, "enroll", func() error {
		tries++
		dctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		defer cancel()
		c, err := companion.Dial(dctx, baseURL(pick(w.bridge)))
		if err != nil {
			return w.bridgeErr(err)
		}
		defer c.Close()
		if _, err := c.Scan(dctx, e.ExchangeID, dev); err != nil {
			var be *companion.BridgeError
			if errors.As(err, &be) && be.Code == "conflict" {
				s, done, err := w.afterConflict(ctx, tok, in.StatusID, "ENROLLED", err)
				if done {
					ack = protocol.Ack{Status: s.Status, PHID: s.PHID}
				}
				return err
			}
			return w.bridgeErr(err)
		}
		code, err := totp.Code(e.Secret, time.Now(), e.Params)
		if err != nil {
			return err
		}
		w.stats.remember("", code)
		ack, err = c.EnrollWithKey(dctx, e.ExchangeID, code, &jwk)
		if err := w.bridgeErr(err); err != nil {
			var be *companion.BridgeError
			if errors.As(err, &be) && be.Code == "conflict" {
				s, done, err := w.afterConflict(ctx, tok, in.StatusID, "ENROLLED", err)
				if done {
					ack = protocol.Ack{Status: s.Status, PHID: s.PHID}
				}
				return err
			}
			if tries > 1 && errors.As(err, &be) && be.Code == "invalid_code" {
				// An earlier attempt may have enrolled before its answer was lost.
				s, perr := w.pollState(ctx, tok, in.StatusID)
				if perr == nil && s.Status == "ENROLLED" {
					ack = protocol.Ack{Status: s.Status, PHID: s.PHID}
					return nil
				}
			}
			return err
		}
		return nil
	}); err != nil {
		return fail(err)
	}
	if ack.Status != "ENROLLED" || ack.PHID == "" {
		return fail(fmt.Errorf("enroll ack %+v", ack))
	}
	res.phid = ack.PHID

	// 3. The device is in the registry (through either replica) before the sign-in uses it.
	if err := w.retrying(ctx, "device listed", func() error {
		code, b, err := w.call(ctx, http.MethodGet, baseURL(pick(w.registry))+"/device-srv/devices", tok, "", nil)
		if err != nil {
			return err
		}
		var devices []struct {
			PHID string `json:"ph_id"`
			Push bool   `json:"push"`
		}
		if code != http.StatusOK || json.Unmarshal(b, &devices) != nil {
			return fmt.Errorf("devices: %d %s", code, b)
		}
		got := map[string]bool{}
		for _, d := range devices {
			got[d.PHID] = d.Push
		}
		if len(devices) < 2 {
			return errRetry{"device not registered yet"}
		}
		if len(devices) != 2 || !got[res.phid] {
			return fmt.Errorf("devices = %s, want %s (push-capable) and the email factor %s", b, res.phid, res.emailPHID)
		}
		if push, ok := got[res.emailPHID]; !ok || push {
			return fmt.Errorf("devices = %s, want the email factor %s, not push-capable", b, res.emailPHID)
		}
		return nil
	}); err != nil {
		return fail(err)
	}

	// 4. Sign in: start an authentication on either status replica, verify with the code of the
	// next TOTP step (one step ahead is accepted, and it is later than the enrollment's).
	var ai authInitiation
	if err := w.initiate(ctx, "sign-in initiation", w.status, "/verification-srv/authentication/totp/initiation", tok,
		map[string]string{"usage_type": "MULTIFACTOR_AUTHENTICATION"}, &ai); err != nil {
		return fail(err)
	}
	res.authStatusID = ai.StatusID
	tries = 0
	var consumed int64 // a TOTP step a lost attempt may have used up
	if err := w.retrying(ctx, "sign-in verification", func() error {
		tries++
		if consumed > 0 {
			// A code is valid one step either side: wait (at most one step) until a step after
			// the consumed one is within reach.
			until := time.Unix(consumed*30, 0)
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(time.Until(until)):
			}
		}
		at := time.Now().Add(30 * time.Second)
		pass, err := totp.Code(e.Secret, at, e.Params)
		if err != nil {
			return err
		}
		w.stats.remember("", pass)
		code, b, err := w.call(ctx, http.MethodPost, baseURL(pick(w.status))+"/verification-srv/authentication/totp/verification", tok, "",
			map[string]string{"exchange_id": ai.ExchangeID.ExchangeID, "pass_code": pass})
		if err != nil {
			return err
		}
		if code == http.StatusOK {
			return nil
		}
		if code == http.StatusConflict {
			_, _, err := w.afterConflict(ctx, tok, ai.StatusID, "AUTHENTICATED", fmt.Errorf("%d %s", code, b))
			return err
		}
		if tries > 1 && code == http.StatusBadRequest {
			// An earlier attempt may have authenticated before its answer was lost.
			s, perr := w.pollState(ctx, tok, ai.StatusID)
			if perr == nil && s.Status == "AUTHENTICATED" {
				return nil
			}
			// Or it got as far as the registry, which used the code up, and no further: the
			// retry is refused as a replay (a verification.failed event), and the documented
			// answer is to wait for the next code.
			if perr == nil && s.Status == "INITIATED" && bytes.Contains(b, []byte(`"code_replayed"`)) {
				consumed = at.Unix() / 30
				w.stats.replayed(ai.StatusID)
				return errRetry{"code used up by a lost attempt (next step)"}
			}
		}
		return fmt.Errorf("%d %s", code, b)
	}); err != nil {
		return fail(err)
	}

	// 5. Sign in again, by push.
	if err := w.pushSignIn(ctx, tok, soakDevice{phid: res.phid, key: key}, &res); err != nil {
		return fail(err)
	}

	// 6. The status objects say where the flow ended, on whichever status replica answers. A
	// replica answers polls from a view that follows the bucket, so it may lag its peer's write
	// for a moment: poll until the state arrives, a bounded wait whose length is reported.
	var err2 error
	if res.emailEnrolled, err2 = w.settled(ctx, tok, res.emailEnrollID, "ENROLLED"); err2 != nil {
		return fail(err2)
	}
	if res.emailAuthenticated, err2 = w.settled(ctx, tok, res.emailAuthID, "AUTHENTICATED"); err2 != nil {
		return fail(err2)
	}
	if res.enrolled, err2 = w.settled(ctx, tok, res.enrollStatusID, "ENROLLED"); err2 != nil {
		return fail(err2)
	}
	if res.authenticated, err2 = w.settled(ctx, tok, res.authStatusID, "AUTHENTICATED"); err2 != nil {
		return fail(err2)
	}
	if res.pushed, err2 = w.settled(ctx, tok, res.pushStatusID, "AUTHENTICATED"); err2 != nil {
		return fail(err2)
	}
	return res
}

// soakDevice is an enrolled push-capable companion.
type soakDevice struct {
	phid string
	key  *ecdsa.PrivateKey
}

// challengeWait is how long a logged-in companion waits for a challenge it expects before it
// logs in again on a new connection. A challenge can miss a live session: when it went out while
// the session's bridge replica had lost its NATS node, or its bridge replica died. The bridge
// sends a device's open challenges at every login (PROTOCOL.md §10), so logging in again gets it.
const challengeWait = 5 * time.Second

// soakCompanion plays a push-capable companion app: it keeps one logged-in session on a bridge
// replica and, as PROTOCOL.md §10 asks, dials again (any replica) and logs in again whenever the
// connection is lost.
type soakCompanion struct {
	w    *soakWorld
	dev  soakDevice
	c    *companion.Client // nil while not logged in
	seen map[string]protocol.PushChallenge
}

// session returns the logged-in connection, dialling and logging in first if there is none.
func (s *soakCompanion) session(ctx context.Context) (*companion.Client, error) {
	if s.c != nil {
		select {
		case <-s.c.Done():
			s.drop()
		default:
			return s.c, nil
		}
	}
	err := s.w.retrying(ctx, "push login", func() error {
		dctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		defer cancel()
		c, err := companion.Dial(dctx, baseURL(pick(s.w.bridge)))
		if err != nil {
			return s.w.bridgeErr(err)
		}
		ack, err := c.Login(dctx, s.dev.phid, s.dev.key)
		if err != nil {
			_ = c.Close()
			return s.w.bridgeErr(err)
		}
		if ack.PHID != s.dev.phid {
			_ = c.Close()
			return fmt.Errorf("login ack %+v", ack)
		}
		s.c = c
		return nil
	})
	return s.c, err
}

// drop closes the session; the next call logs in again.
func (s *soakCompanion) drop() {
	if s.c != nil {
		_ = s.c.Close()
		s.c = nil
	}
}

// challenge returns the challenge with id once it has arrived. When the connection ends, or the
// challenge has not come within challengeWait, it drops the session and answers errRetry: the
// next attempt logs in again, and the login delivers the open challenges.
func (s *soakCompanion) challenge(ctx context.Context, id string) (protocol.PushChallenge, error) {
	if ch, ok := s.seen[id]; ok {
		return ch, nil
	}
	c, err := s.session(ctx)
	if err != nil {
		return protocol.PushChallenge{}, err
	}
	timer := time.NewTimer(challengeWait)
	defer timer.Stop()
	for {
		select {
		case ch := <-c.Challenges():
			s.seen[ch.ChallengeID] = ch
			if ch.ChallengeID == id {
				return ch, nil
			}
		case <-c.Done():
			s.drop()
			return protocol.PushChallenge{}, errRetry{"bridge connection lost (log in again)"}
		case <-timer.C:
			s.drop()
			return protocol.PushChallenge{}, errRetry{fmt.Sprintf("no challenge within %v (log in again for the open ones)", challengeWait)}
		case <-ctx.Done():
			return protocol.PushChallenge{}, ctx.Err()
		}
	}
}

// pushSignIn signs the user in by push: the companion logs in on either bridge replica, the
// sign-in starts on either status replica (one idempotency key for every attempt), and the
// companion approves it with the number the sign-in page shows.
func (w *soakWorld) pushSignIn(ctx context.Context, tok string, dev soakDevice, res *flowResult) error {
	phone := &soakCompanion{w: w, dev: dev, seen: map[string]protocol.PushChallenge{}}
	defer phone.drop()
	// A companion app keeps its session; the challenge then arrives live.
	if _, err := phone.session(ctx); err != nil {
		return err
	}
	var in struct {
		authInitiation
		Number string `json:"number"`
	}
	if err := w.initiate(ctx, "push initiation", w.status, "/verification-srv/authentication/push/initiation", tok,
		map[string]any{"context": map[string]string{"app": "soak"}}, &in); err != nil {
		return err
	}
	res.pushStatusID = in.StatusID
	return w.retrying(ctx, "push answer", func() error {
		ch, err := phone.challenge(ctx, in.ExchangeID.ExchangeID)
		if err != nil {
			return err
		}
		if !slices.Contains(ch.Numbers, in.Number) {
			return fmt.Errorf("challenge numbers %v do not hold the page's %s", ch.Numbers, in.Number)
		}
		c, err := phone.session(ctx)
		if err != nil {
			return err
		}
		rctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		defer cancel()
		ack, err := c.Respond(rctx, ch.ChallengeID, protocol.DecisionApprove, in.Number, "")
		if err == nil {
			if ack.Status != "AUTHENTICATED" {
				return fmt.Errorf("push answer ack %+v", ack)
			}
			return nil
		}
		var be *companion.BridgeError
		if errors.As(err, &be) && be.Code == "conflict" {
			_, _, err := w.afterConflict(ctx, tok, in.StatusID, "AUTHENTICATED", err)
			return err
		}
		if c.Err() != nil {
			phone.drop()
		}
		return w.bridgeErr(err)
	})
}

// openStates are the states an enrollment or authentication can still leave.
var openStates = map[string]bool{"INITIATED": true, "SCANNED": true, "PUSH_ACKNOWLEDGED": true, "ALLOWED": true}

// afterConflict does what the API documents for a conflict: read the status. done says the flow
// got there (an earlier attempt went through before its answer was lost); a status still open
// means the write lost a race that did not change the outcome (on FerretDB, a version claim that
// a killed replica left holds the document's next version for a while), so the attempt is
// retried; anything else is err, the conflict itself.
func (w *soakWorld) afterConflict(ctx context.Context, tok, statusID, done string, err error) (statusResponse, bool, error) {
	s, perr := w.pollState(ctx, tok, statusID)
	switch {
	case perr != nil:
		return s, false, err
	case s.Status == done:
		return s, true, nil
	case openStates[s.Status]:
		return s, false, errRetry{"conflict while the status is open (read it, retry)"}
	}
	return s, false, err
}

// settledWait bounds how long a poll may lag an answered state. A KV poll view whose watch
// stalled after its NATS node died once lagged 14.7 s; it now reads the bucket when it cannot
// confirm it is current within a second, and what remains is the bucket's own leader election.
// The longest lag is reported.
const settledWait = 15 * time.Second

// settled polls statusID until it is want or settledWait has passed, and returns the last state.
func (w *soakWorld) settled(ctx context.Context, tok, statusID, want string) (string, error) {
	start := time.Now()
	for {
		s, err := w.pollState(ctx, tok, statusID)
		if err != nil {
			return "", err
		}
		if s.Status == want || time.Since(start) > settledWait {
			if lag := time.Since(start); s.Status == want && lag > 0 {
				w.stats.lag(lag)
			}
			return s.Status, nil
		}
		w.stats.retry("poll: stale view (state not arrived yet)")
		select {
		case <-ctx.Done():
			return s.Status, nil
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// TestSoak: see the comment at the top of this file.
func TestSoak(t *testing.T) {
	if testing.Short() {
		t.Skip("soak: skipped with -short (it builds and starts 13 processes per backend); make test runs its short version and make soak the full one")
	}
	began := time.Now()
	bin := filepath.Join(t.TempDir(), "bin")
	build := exec.Command("go", "build", "-o", bin+"/", "./services/initiation", "./services/status",
		"./services/device-registry", "./services/notifier", "./mobile-bridge", "./tests/cmd/natsnode")
	build.Dir = ".."
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	t.Logf("soak: build %v", time.Since(began).Round(time.Millisecond))
	for _, b := range soakBackends {
		t.Run(b.name, func(t *testing.T) { runSoak(t, bin, b, soakPlanFromEnv(t, b.name)) })
	}
}

// runSoak runs the topology of the binaries in bin on backend b and checks the outcome.
func runSoak(t *testing.T, bin string, b soakBackend, plan soakPlan) {
	began := time.Now()
	dir := t.TempDir()
	storeEnv := b.env(t) // before the processes' cleanup, so the database goes after them

	// Three NATS nodes with routes to each other.
	const nodes = 3
	var clientURLs, routes []string
	type nodeAddrs struct{ client, cluster, monitor string }
	na := make([]nodeAddrs, nodes)
	for i := range na {
		na[i] = nodeAddrs{freeAddr(t), freeAddr(t), freeAddr(t)}
		clientURLs = append(clientURLs, "nats://"+na[i].client)
		routes = append(routes, "nats-route://"+na[i].cluster)
	}
	w := &soakWorld{
		jwtKey: []byte("soak-test-jwt-key-0123456789abcdef0123"),
		stats: &soakStats{retries: map[string]int{}, replays: map[string]int{},
			refused: map[string]int{}, unanswered: map[string]int{}},
		http: &http.Client{Timeout: 20 * time.Second},
	}
	for i, a := range na {
		w.nats = append(w.nats, &proc{
			name: fmt.Sprintf("nats-%d", i+1), path: filepath.Join(bin, "natsnode"),
			args: []string{"-name", fmt.Sprintf("n%d", i+1), "-addr", a.client, "-cluster", a.cluster,
				"-routes", strings.Join(routes, ","), "-http", a.monitor, "-store", filepath.Join(dir, fmt.Sprintf("js-%d", i+1))},
			env: os.Environ(), log: filepath.Join(dir, fmt.Sprintf("nats-%d.log", i+1)),
			health: "http://" + a.monitor + "/healthz",
		})
	}
	t.Cleanup(func() {
		for _, group := range [][]*proc{w.initiation, w.status, w.registry, w.bridge, w.notifier, w.nats} {
			for _, p := range group {
				p.mu.Lock()
				cmd, exited := p.cmd, p.exited
				p.mu.Unlock()
				if cmd != nil {
					_ = cmd.Process.Kill()
					<-exited
				}
			}
		}
	})
	for _, p := range w.nats {
		p.start(t)
	}
	// A new cluster elects its JetStream meta leader once the routes are up; on a loaded CI
	// machine that has taken more than 30 s. A deadline, not a wait: ready nodes return at once.
	for _, p := range w.nats {
		if err := p.waitReady(90 * time.Second); err != nil {
			t.Fatal(err)
		}
	}

	// The mail server and SMS receiver the notifiers deliver to, in this process, keeping every
	// message of the run; and the tap that sees every delivery request the registry publishes.
	inbox, err := devinbox.Start(devinbox.Options{Max: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = inbox.Close() })
	w.inbox = inbox
	deliveryKey := []byte("soak delivery key 0123456789abcd")
	w.tap = startDeliveryTap(t, clientURLs, deliveryKey)

	// Two replicas of every service, each given every NATS node.
	secretKey := base64.StdEncoding.EncodeToString([]byte("0123456789abcdef0123456789abcdef"))
	deliveryKeyB64 := base64.StdEncoding.EncodeToString(deliveryKey)
	signingKey := strings.ReplaceAll(signingKeyPEM(t), "\n", `\n`)
	addr := map[string][]string{}
	serviceNames := []string{"initiation", "status", "device-registry", "mobile-bridge", "notifier"}
	for _, svc := range serviceNames {
		addr[svc] = []string{freeAddr(t), freeAddr(t)}
	}
	env := append(os.Environ(),
		"MFA_NATS_URL="+strings.Join(clientURLs, ","), "MFA_NATS_REPLICAS=3", "MFA_JWT_SECRET="+string(w.jwtKey),
		"MFA_SECRET_KEY="+secretKey, "MFA_SIGNING_KEY="+signingKey, "MFA_PUBLIC_URL=http://"+addr["mobile-bridge"][0],
		"MFA_POLL_RATE=0", "MFA_USER_START_RATE=0", "MFA_USER_STREAMS=0", "MFA_COMMAND_TIMEOUT=5s", "MFA_LOG_LEVEL=info",
		"MFA_DELIVERY_KEY="+deliveryKeyB64, "MFA_OOB_CODE_TTL="+soakCodeTTL.String())
	env = append(env, storeEnv...)
	// Only the notifier holds the mail server and the SMS webhook.
	notifierEnv := []string{"MFA_SMTP_URL=" + inbox.SMTPURL(), "MFA_SMS_PROVIDER=webhook",
		"MFA_SMS_WEBHOOK_URL=" + inbox.SMSWebhookURL(), "MFA_SMS_WEBHOOK_SECRET=" + inbox.SMSWebhookSecret()}
	for _, svc := range serviceNames {
		for r, a := range addr[svc] {
			p := &proc{
				name: fmt.Sprintf("%s-%d", svc, r+1), path: filepath.Join(bin, svc), env: append(slices.Clone(env), "MFA_HTTP_ADDR="+a),
				log: filepath.Join(dir, fmt.Sprintf("%s-%d.log", svc, r+1)), health: "http://" + a + "/healthz",
			}
			switch svc {
			case "notifier":
				p.env = append(p.env, notifierEnv...)
				w.notifier = append(w.notifier, p)
			case "initiation":
				w.initiation = append(w.initiation, p)
			case "status":
				w.status = append(w.status, p)
			case "device-registry":
				w.registry = append(w.registry, p)
			case "mobile-bridge":
				w.bridge = append(w.bridge, p)
			}
		}
	}
	// All at once, in no order the services may rely on: the stream, the buckets and the
	// consumer do not exist yet, every replica creates or opens them itself, and what a new
	// cluster answers meanwhile (stream not found just after a peer created it, no meta leader)
	// is waited out (natsx.AwaitJetStream), not fatal.
	services := slices.Concat(w.initiation, w.status, w.registry, w.bridge, w.notifier)
	for _, p := range services {
		p.start(t)
	}
	for _, p := range services {
		if err := p.waitReady(30 * time.Second); err != nil {
			t.Fatal(err)
		}
	}
	up := time.Now()

	// The run: workers take flows in order; at fixed points of progress the chaos kills one
	// replica of each service and one NATS node, and later starts them again, while the other
	// workers keep going.
	ctx, cancel := context.WithTimeout(context.Background(), plan.runFor)
	defer cancel()
	results := make([]flowResult, plan.flows)
	next := make(chan int)
	var wg sync.WaitGroup
	for range plan.workers {
		wg.Go(func() {
			for i := range next {
				// A flow whose mail waits for a killed notifier's AckWait (30 s), or for a resend
				// after the code's life (soakCodeTTL), takes longer than one that does not.
				fctx, fcancel := context.WithTimeout(ctx, 150*time.Second)
				results[i] = w.flow(fctx, i)
				fcancel()
			}
		})
	}
	var kills, notifierKills atomic.Int32
	var chaos []string
	segments := 2*plan.rounds + 1
	var restarted []*proc
	for i := range plan.flows {
		for r := range plan.rounds {
			killAt := plan.flows * (2*r + 1) / (segments + 1)
			restartAt := plan.flows * (2*r + 2) / (segments + 1)
			switch i {
			case killAt:
				// What the last round started again must be up before this round kills.
				for _, p := range restarted {
					if err := p.waitReady(60 * time.Second); err != nil {
						t.Fatal(err)
					}
				}
				victims := []*proc{w.initiation[r%2], w.status[r%2], w.registry[r%2], w.bridge[r%2], w.notifier[r%2], w.nats[r%nodes]}
				for _, p := range victims {
					p.kill(t)
					kills.Add(1)
				}
				notifierKills.Add(1)
				chaos = append(chaos, fmt.Sprintf("flow %d: kill -9 %s", i, names(victims)))
				restarted = victims
			case restartAt:
				for _, p := range restarted {
					p.start(t)
				}
				chaos = append(chaos, fmt.Sprintf("flow %d: restart %s", i, names(restarted)))
			}
		}
		next <- i
	}
	close(next)
	wg.Wait()
	for _, p := range restarted {
		if err := p.waitReady(60 * time.Second); err != nil {
			t.Error(err)
		}
	}
	flowsDone := time.Now()

	// Every flow ends in its right state.
	enrolled, authenticated, pushed, emailEnrolled, emailAuthenticated, stepUps := 0, 0, 0, 0, 0, 0
	want := map[events.Type]map[string]bool{}
	expect := func(typ events.Type, subject string) {
		if want[typ] == nil {
			want[typ] = map[string]bool{}
		}
		want[typ][subject] = true
	}
	for _, r := range results {
		stepUps += len(r.stepUpIDs)
		if r.err != nil {
			t.Errorf("%s: %v", r.sub, r.err)
			for _, id := range []string{r.enrollStatusID, r.emailEnrollID} {
				if id != "" {
					expect(events.EnrollmentInitiated, id)
				}
			}
			continue
		}
		if r.emailEnrolled == "ENROLLED" {
			emailEnrolled++
		} else {
			t.Errorf("%s: email enrollment %s is %s, want ENROLLED", r.sub, r.emailEnrollID, r.emailEnrolled)
		}
		if r.emailAuthenticated == "AUTHENTICATED" {
			emailAuthenticated++
		} else {
			t.Errorf("%s: email authentication %s is %s, want AUTHENTICATED", r.sub, r.emailAuthID, r.emailAuthenticated)
		}
		expect(events.EnrollmentInitiated, r.emailEnrollID)
		expect(events.EnrollmentEnrolled, r.emailEnrollID)
		expect(events.DeviceRegistered, r.emailPHID)
		for _, id := range append([]string{r.emailAuthID}, r.stepUpIDs...) {
			expect(events.VerificationInitiated, id)
			expect(events.VerificationSucceeded, id)
		}
		if r.enrolled == "ENROLLED" {
			enrolled++
		} else {
			t.Errorf("%s: enrollment %s is %s, want ENROLLED", r.sub, r.enrollStatusID, r.enrolled)
		}
		if r.authenticated == "AUTHENTICATED" {
			authenticated++
		} else {
			t.Errorf("%s: authentication %s is %s, want AUTHENTICATED", r.sub, r.authStatusID, r.authenticated)
		}
		if r.pushed == "AUTHENTICATED" {
			pushed++
		} else {
			t.Errorf("%s: push authentication %s is %s, want AUTHENTICATED", r.sub, r.pushStatusID, r.pushed)
		}
		expect(events.EnrollmentInitiated, r.enrollStatusID)
		expect(events.EnrollmentScanned, r.enrollStatusID)
		expect(events.EnrollmentEnrolled, r.enrollStatusID)
		expect(events.DeviceRegistered, r.phid)
		expect(events.VerificationInitiated, r.authStatusID)
		expect(events.VerificationSucceeded, r.authStatusID)
		for _, typ := range []events.Type{events.VerificationInitiated, events.PushSent, events.PushAcknowledged, events.VerificationSucceeded} {
			expect(typ, r.pushStatusID)
		}
	}

	// Every fact's event is on MFA_EVENTS exactly once: wait until each expected one has
	// arrived (the outbox relays publish after the answer), then count.
	nc, err := natsx.Connect(strings.Join(clientURLs, ","), "soak-check")
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	var all []soakEvent
	deadline := time.Now().Add(60 * time.Second)
	for {
		all, err = readAllEvents(ctx, js)
		missing := 0
		if err == nil {
			have := map[events.Type]map[string]bool{}
			for _, e := range all {
				if have[e.Type] == nil {
					have[e.Type] = map[string]bool{}
				}
				have[e.Type][e.subject()] = true
			}
			for typ, subjects := range want {
				for s := range subjects {
					if !have[typ][s] {
						missing++
					}
				}
			}
		}
		if err == nil && missing == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("events: %d expected facts missing from MFA_EVENTS after 60s (read error: %v)", missing, err)
			break
		}
		time.Sleep(200 * time.Millisecond) // a bounded wait for the relays, not synchronisation
	}
	byID := map[string]int{}
	byFact := map[string]int{}
	byType := map[events.Type]int{}
	for _, e := range all {
		byID[e.ID]++
		byFact[string(e.Type)+" "+e.subject()]++
		byType[e.Type]++
	}
	// Facts no flow asked for: an initiation retried after its answer was lost would make
	// another enrollment or authentication without the idempotency key (and a second push
	// cancels the first).
	extra := map[events.Type]int{}
	for _, e := range all {
		if !want[e.Type][e.subject()] && e.Type != events.VerificationFailed {
			extra[e.Type]++
		}
	}
	// Every initiation carries an Idempotency-Key, reused on its retries: exactly one
	// enrollment per flow and one authentication per sign-in, however many answers were lost.
	if len(extra) > 0 {
		t.Errorf("events for facts no flow asked for: %v, want none (initiations are idempotent)", extra)
	}
	if n := byType[events.EnrollmentInitiated]; n != 2*plan.flows {
		t.Errorf("%d %s events, want %d (an email address and a device per flow)", n, events.EnrollmentInitiated, 2*plan.flows)
	}
	if n := byType[events.VerificationInitiated]; n != 3*plan.flows+stepUps {
		t.Errorf("%d %s events, want %d (an email, a TOTP and a push sign-in per flow, and %d email sign-ins for a fresh step-up proof)",
			n, events.VerificationInitiated, 3*plan.flows+stepUps, stepUps)
	}
	for id, n := range byID {
		if n > 1 {
			t.Errorf("event id %s is on MFA_EVENTS %d times", id, n)
		}
	}
	for typ, subjects := range want {
		for s := range subjects {
			if n := byFact[string(typ)+" "+s]; n != 1 {
				t.Errorf("%s for %s: %d events, want exactly 1", typ, s, n)
			}
		}
	}
	// A failed verification is only the refused replay of a code a lost attempt used up.
	failed := map[string]int{}
	for _, e := range all {
		if e.Type == events.VerificationFailed {
			failed[e.Subject]++
		}
	}
	// For an email sign-in, a mailed code refused because a resend or a retried initiation
	// replaced it; a verification whose answer was lost may have been refused too.
	for id, n := range failed {
		if lo, hi := w.stats.replays[id]+w.stats.refused[id], w.stats.replays[id]+w.stats.refused[id]+w.stats.unanswered[id]; n < lo || n > hi {
			t.Errorf("%d verification.failed events for %s, want %d (its refused replays and replaced mailed codes) to %d (and lost answers)", n, id, lo, hi)
		}
	}
	for id, n := range w.stats.refused {
		if failed[id] < n {
			t.Errorf("%d verification.failed events for %s, want at least %d (its refused mailed codes)", failed[id], id, n)
		}
	}
	for _, typ := range []events.Type{events.EnrollmentFailed, events.EnrollmentExpired, events.VerificationLocked, events.DeliveryFailed} {
		if byType[typ] > 0 {
			t.Errorf("%d %s events, want none", byType[typ], typ)
		}
	}

	// What the SMTP server received, held against the deliveries.
	dctx, dcancel := context.WithTimeout(context.Background(), 3*time.Minute)
	deliveries := checkDeliveries(dctx, t, w, js, int(notifierKills.Load()))
	dcancel()
	checkNotices(t, w, all, int(notifierKills.Load()), &deliveries)

	// No event carries a code sent by mail or a full address; the codes and addresses are those
	// of every published delivery request.
	var mailedCodes, addresses []string
	for _, r := range w.tap.requests() {
		mailedCodes = append(mailedCodes, r.Code)
		addresses = append(addresses, r.To)
	}
	for i := range plan.flows {
		addresses = append(addresses, soakAddress(i))
	}
	slices.Sort(addresses)
	addresses = slices.Compact(addresses)
	for _, e := range all {
		raw := string(e.Raw)
		for _, c := range mailedCodes {
			if logHoldsCode(raw, c) || strings.Contains(raw, ":"+c+",") || strings.Contains(raw, ":"+c+"}") {
				t.Errorf("event %s (%s) holds a mailed code", e.ID, e.Type)
			}
		}
		for _, a := range addresses {
			if strings.Contains(raw, a) {
				t.Errorf("event %s (%s) holds a full email address", e.ID, e.Type)
			}
		}
	}

	// Clients saw only documented errors.
	for _, u := range w.stats.undocumented {
		t.Errorf("undocumented answer: %s", u)
	}

	// No secret in any process log.
	logs := slices.Concat(w.nats, services)
	logBytes, errorLines := 0, 0
	for _, p := range logs {
		b, err := os.ReadFile(p.log)
		if err != nil {
			t.Fatal(err)
		}
		logBytes += len(b)
		s := string(b)
		for _, secret := range w.stats.secrets {
			if strings.Contains(s, secret) {
				t.Errorf("%s log holds a TOTP secret", p.name)
			}
		}
		for _, c := range w.stats.codes {
			if logHoldsCode(s, c) {
				t.Errorf("%s log holds a TOTP or mailed code", p.name)
			}
		}
		for _, c := range mailedCodes {
			if logHoldsCode(s, c) {
				t.Errorf("%s log holds a mailed code", p.name)
			}
		}
		for _, a := range addresses {
			if strings.Contains(s, a) {
				t.Errorf("%s log holds a full email address", p.name)
			}
		}
		for _, k := range []string{string(w.jwtKey), secretKey} {
			if strings.Contains(s, k) {
				t.Errorf("%s log holds a configured key", p.name)
			}
		}
		for _, line := range strings.Split(s, "\n") {
			if strings.Contains(line, "level=ERROR") {
				errorLines++
				if errorLines <= 20 {
					t.Logf("%s: %s", p.name, line)
				}
			}
		}
		if os.Getenv("MFA_SOAK_LOGS") != "" {
			t.Logf("---- %s\n%s", p.name, s)
		}
	}

	// The figures.
	var f strings.Builder
	fmt.Fprintf(&f, "soak on %s: %d flows by %d workers: %d EMAIL ENROLLED, %d AUTHENTICATED by email (+%d for a fresh step-up proof), "+
		"%d ENROLLED, %d AUTHENTICATED by TOTP, %d AUTHENTICATED by push\n",
		b.name, plan.flows, plan.workers, emailEnrolled, emailAuthenticated, stepUps, enrolled, authenticated, pushed)
	fmt.Fprintf(&f, "  kills: %d (SIGKILL) in %d round(s):\n", kills.Load(), plan.rounds)
	for _, c := range chaos {
		fmt.Fprintf(&f, "    %s\n", c)
	}
	refusedCodes := 0
	for _, n := range w.stats.refused {
		refusedCodes += n
	}
	fmt.Fprintf(&f, "  deliveries: %d published (%d not stored: the publisher got an error), %d stored on MFA_DELIVERIES; "+
		"%d mails at the SMTP server, %d distinct Message-IDs, %d sent twice (allowed: %d notifier kills)%s; %d mailed sign-in codes refused as replaced\n",
		deliveries.published, deliveries.notStored, deliveries.stored, deliveries.mails, deliveries.distinct,
		deliveries.duplicates, notifierKills.Load(), strings.Join(append([]string{""}, deliveries.duplicateIDs...), " "), refusedCodes)
	fmt.Fprintf(&f, "  security notifications: %d factors registered, %d notice mails, %d sent twice\n",
		deliveries.noticeEvents, deliveries.notices, deliveries.noticeDuplicates)
	fmt.Fprintf(&f, "  events on MFA_EVENTS: %d, %d distinct ids\n", len(all), len(byID))
	var types []string
	for typ := range byType {
		types = append(types, string(typ))
	}
	sort.Strings(types)
	for _, typ := range types {
		fmt.Fprintf(&f, "    %-28s %d\n", typ, byType[events.Type(typ)])
	}
	fmt.Fprintf(&f, "  events for facts no flow reported (abandoned retries): %v\n", extra)
	total := 0
	var reasons []string
	for r := range w.stats.retries {
		reasons = append(reasons, r)
	}
	sort.Strings(reasons)
	for _, r := range reasons {
		total += w.stats.retries[r]
	}
	fmt.Fprintf(&f, "  client retries: %d (longest wait for a poll to show the answered state: %v)\n", total, w.stats.maxLag.Round(time.Millisecond))
	for _, r := range reasons {
		fmt.Fprintf(&f, "    %-60s %d\n", r, w.stats.retries[r])
	}
	fmt.Fprintf(&f, "  undocumented answers: %d; ERROR log lines: %d; no secret, code or address in %d KB of logs of %d processes\n",
		len(w.stats.undocumented), errorLines, logBytes/1024, len(logs))
	fmt.Fprintf(&f, "  time: start-up %v, flows %v, total %v (without the build)\n",
		up.Sub(began).Round(time.Millisecond), flowsDone.Sub(up).Round(time.Millisecond), time.Since(began).Round(time.Millisecond))
	t.Log("\n" + f.String())
}

// logHoldsCode reports whether log holds code as a value: quoted, or after "=" or ": " and not
// followed by more of a word (the six digits that start a UUID such as conn=123456ab-… are not
// the code).
func logHoldsCode(log, code string) bool {
	for _, prefix := range []string{`"`, "=", ": "} {
		for rest := log; ; {
			i := strings.Index(rest, prefix+code)
			if i < 0 {
				break
			}
			rest = rest[i+len(prefix)+len(code):]
			if rest == "" || !strings.ContainsAny(rest[:1], "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-") {
				return true
			}
		}
	}
	return false
}

func names(ps []*proc) string {
	var n []string
	for _, p := range ps {
		n = append(n, p.name)
	}
	return strings.Join(n, ", ")
}

// soakEvent is the part of a CloudEvent the soak counts.
type soakEvent struct {
	events.Envelope
	Raw []byte // the event as stored
}

// subject is the fact an event is about: the CloudEvent subject, or for a device event the
// ph_id of its data.
func (e soakEvent) subject() string {
	if e.Type == events.DeviceRegistered {
		var d struct {
			PHID string `json:"ph_id"`
		}
		if json.Unmarshal(e.Data, &d) == nil && d.PHID != "" {
			return d.PHID
		}
	}
	return e.Subject
}

// readAllEvents reads MFA_EVENTS from its first message to its last.
func readAllEvents(ctx context.Context, js jetstream.JetStream) ([]soakEvent, error) {
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	st, err := js.Stream(ctx, events.Stream)
	if err != nil {
		return nil, err
	}
	info, err := st.Info(ctx)
	if err != nil {
		return nil, err
	}
	last := info.State.LastSeq
	cons, err := st.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		return nil, err
	}
	var out []soakEvent
	for seq := uint64(0); seq < last; {
		batch, err := cons.Fetch(256, jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			return nil, err
		}
		n := 0
		for m := range batch.Messages() {
			n++
			md, err := m.Metadata()
			if err != nil {
				return nil, err
			}
			seq = md.Sequence.Stream
			e := soakEvent{Raw: m.Data()}
			if err := json.Unmarshal(m.Data(), &e.Envelope); err != nil {
				return nil, fmt.Errorf("event %d: %w", seq, err)
			}
			out = append(out, e)
		}
		if batch.Error() != nil {
			return nil, batch.Error()
		}
		if n == 0 && ctx.Err() != nil {
			return nil, ctx.Err()
		}
	}
	return out, nil
}

func TestLogHoldsCode(t *testing.T) {
	for log, want := range map[string]bool{
		`msg=x code=123456 next=1`:        true,
		`{"code":"123456"}`:               true,
		`err: 123456`:                     true,
		`msg=x code=123456`:               true,
		`conn=123456ab-0000-4000-8000-00`: false,
		`id=1234567`:                      false,
		`remote=127.0.0.1:123456`:         false,
	} {
		if got := logHoldsCode(log, "123456"); got != want {
			t.Errorf("logHoldsCode(%q) = %v, want %v", log, got, want)
		}
	}
}
