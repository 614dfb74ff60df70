package registrysvc_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/mfaflow/mfaflow/events"
	"github.com/mfaflow/mfaflow/events/commands"
	"github.com/mfaflow/mfaflow/events/method"
	"github.com/mfaflow/mfaflow/pkg/fault"
	"github.com/mfaflow/mfaflow/pkg/natstest"
	"github.com/mfaflow/mfaflow/pkg/rpc"
)

// outcome is what a factors command answered: the reply of a success, or the code of a refusal
// (and, for locked, when the lock ends).
type outcome struct {
	commands.FactorReply
	// Result is resultOK or the refusal's fault code ("error: …" for an error without one).
	Result      string
	LockedUntil time.Time
}

// The results the tests expect (a malformed code is refused as bad_request).
const (
	resultOK        = "ok"
	resultInvalid   = string(fault.InvalidCode)
	resultMalformed = string(fault.BadRequest)
	resultReplayed  = string(fault.CodeReplayed)
	resultLocked    = string(fault.Locked)
	resultNone      = string(fault.NoFactor)
)

func outcomeOf(reply commands.FactorReply, err error) outcome {
	if err == nil {
		return outcome{FactorReply: reply, Result: resultOK}
	}
	var fe *fault.Error
	if !errors.As(err, &fe) {
		return outcome{Result: "error: " + err.Error()}
	}
	return outcome{Result: string(fe.Code), LockedUntil: fe.Until}
}

// factorCommand sends a factors command as the status service does.
func (e *env) factorCommand(t *testing.T, subject string, req commands.FactorRequest) outcome {
	t.Helper()
	var reply commands.FactorReply
	return outcomeOf(reply, rpc.Call(ctxT(t), e.nc, subject, req, &reply))
}

// check sends a sign-in code check, each for a new authentication.
func (e *env) check(t *testing.T, sub, method, code string) outcome {
	t.Helper()
	return e.checkFor(t, sub, method, code, uuid.NewString())
}

// checkFor sends a code check for the authentication statusID.
func (e *env) checkFor(t *testing.T, sub, method, code, statusID string) outcome {
	t.Helper()
	return e.factorCommand(t, commands.RegistryFactorsCheck, commands.FactorRequest{Sub: sub, Method: method, Code: code, StatusID: statusID})
}

func (e *env) ready(t *testing.T, sub, method string) outcome {
	t.Helper()
	return e.factorCommand(t, commands.RegistryFactorsReady, commands.FactorRequest{Sub: sub, Method: method})
}

func TestSignInCodeIsAcceptedOnceAndNeverTheEnrollmentCode(t *testing.T) {
	e := start(t)
	claim, secret := e.enroll(t, "alice", commands.Device{Name: "Phone"})

	// The code that enrolled the device is spent: it may not sign in.
	if r := e.check(t, "alice", method.TOTP, code(t, secret, e.clock.Now())); r.Result != resultReplayed {
		t.Fatalf("enrollment code at sign-in: %+v, want code_replayed", r)
	}
	e.clock.Advance(30 * time.Second)
	right := code(t, secret, e.clock.Now())
	auth := uuid.NewString()
	if r := e.checkFor(t, "alice", method.TOTP, right, auth); r.Result != resultOK || r.PHID != claim.PHID {
		t.Fatalf("right code: %+v, want ok for %s", r, claim.PHID)
	}
	if r := e.check(t, "alice", method.TOTP, right); r.Result != resultReplayed {
		t.Fatalf("same code again: %+v, want code_replayed", r)
	}
	// The same authentication asking again (its first answer lost) gets the same answer.
	if r := e.checkFor(t, "alice", method.TOTP, right, auth); r.Result != resultOK || r.PHID != claim.PHID {
		t.Fatalf("same code, same authentication: %+v, want ok", r)
	}
	// A code of the step before the accepted one is within the window but older: refused too.
	if r := e.check(t, "alice", method.TOTP, code(t, secret, e.clock.Now().Add(-30*time.Second))); r.Result != resultReplayed {
		t.Fatalf("older step: %+v, want code_replayed", r)
	}
	devs := e.list(t, "alice")
	if len(devs) != 1 || devs[0].LastUsedAt == nil || devs[0].LastUsedAt.Sub(e.clock.Now()).Abs() > time.Second {
		t.Fatalf("last_used_at not set on the matched device: %+v", devs)
	}
	// Someone else's code never matches alice's devices, and bob has no device at all.
	if r := e.check(t, "bob", method.TOTP, right); r.Result != resultNone {
		t.Fatalf("bob: %+v, want no_factor", r)
	}
	if r := e.check(t, "alice", method.TOTP, "12ab56"); r.Result != resultMalformed {
		t.Fatalf("malformed: %+v", r)
	}
}

func TestConcurrentSubmissionsOfOneCodeGiveOneSuccess(t *testing.T) {
	e := start(t)
	_, secret := e.enroll(t, "alice", commands.Device{})
	e.clock.Advance(30 * time.Second)
	results := e.checkConcurrently(t, 20, "alice", code(t, secret, e.clock.Now()))
	if results[resultOK] != 1 || results[resultReplayed] != 19 {
		t.Fatalf("20 concurrent checks of one code: %v, want 1 ok and 19 code_replayed", results)
	}
}

// checkConcurrently submits code as sub's TOTP n times at once and counts the results (an
// error counts under its text).
func (e *env) checkConcurrently(t *testing.T, n int, sub, code string) map[string]int {
	t.Helper()
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		results = map[string]int{}
	)
	for range n {
		wg.Go(func() {
			var reply commands.FactorReply
			err := rpc.Call(ctxT(t), e.nc, commands.RegistryFactorsCheck,
				commands.FactorRequest{Sub: sub, Method: method.TOTP, Code: code}, &reply)
			mu.Lock()
			defer mu.Unlock()
			results[outcomeOf(reply, err).Result]++
		})
	}
	wg.Wait()
	return results
}

// Wrong codes racing on one user's lockout record are all counted (a lost compare-and-set
// reads again): the threshold's worth of them locks the user once, with one event.
func TestConcurrentWrongCodesLockOnce(t *testing.T) {
	e := start(t)
	_, secret := e.enroll(t, "alice", commands.Device{})
	e.clock.Advance(30 * time.Second)
	results := e.checkConcurrently(t, 5, "alice", wrongCode(code(t, secret, e.clock.Now()))) // the default threshold
	if results[resultInvalid] != 4 || results[resultLocked] != 1 {
		t.Fatalf("5 concurrent wrong codes: %v, want 4 invalid_code and 1 locked", results)
	}
	natstest.Eventually(t, wait, func() error {
		if n := len(e.events(t, events.VerificationLocked)); n != 1 {
			return errorf("%d locked events, want 1", n)
		}
		return nil
	})
}

func TestWrongCodesLockTheUserWithDoublingBackOff(t *testing.T) {
	e := start(t)
	_, secret := e.enroll(t, "alice", commands.Device{})
	e.clock.Advance(30 * time.Second)
	right := code(t, secret, e.clock.Now())
	for i := 1; i <= 4; i++ {
		if r := e.check(t, "alice", method.TOTP, wrongCode(right)); r.Result != resultInvalid {
			t.Fatalf("wrong code %d: %+v", i, r)
		}
	}
	// Replays and malformed codes are not guesses: they do not count.
	e.check(t, "alice", method.TOTP, "abc")
	r := e.check(t, "alice", method.TOTP, wrongCode(right))
	if r.Result != resultLocked || !r.LockedUntil.Equal(e.clock.Now().Add(time.Minute)) {
		t.Fatalf("5th wrong code: %+v, want locked for 1 minute from %s", r, e.clock.Now())
	}
	// While locked, a right code is refused too, and so is asking for one.
	if r := e.check(t, "alice", method.TOTP, right); r.Result != resultLocked {
		t.Fatalf("right code while locked: %+v", r)
	}
	if r := e.ready(t, "alice", method.TOTP); r.Result != resultLocked {
		t.Fatalf("ready while locked: %+v", r)
	}
	// The next lock lasts twice as long.
	e.clock.Advance(time.Minute)
	for range 4 {
		e.check(t, "alice", method.TOTP, wrongCode(right))
	}
	if r := e.check(t, "alice", method.TOTP, wrongCode(right)); r.Result != resultLocked || !r.LockedUntil.Equal(e.clock.Now().Add(2*time.Minute)) {
		t.Fatalf("second lock: %+v, want 2 minutes", r)
	}
	// One event per lock, about the user, without any code.
	var locks []events.Envelope
	natstest.Eventually(t, wait, func() error {
		locks = locks[:0]
		for _, ev := range e.events(t, events.VerificationLocked) {
			locks = append(locks, ev.Envelope)
		}
		if len(locks) != 2 {
			return errorf("%d locked events, want 2", len(locks))
		}
		return nil
	})
	for _, ev := range locks {
		if ev.Subject != "alice" || strings.Contains(string(ev.Data), right) {
			t.Fatalf("locked event: %s", ev.Data)
		}
	}
	// An administrator unlocks; a user token may not.
	resp, body := e.do(t, "alice", http.MethodDelete, "/verification-srv/admin/users/alice/lockout", "")
	assertProblem(t, resp, body, http.StatusForbidden, "forbidden")
	admin, err := e.tokens.MintScoped("ops", time.Hour, "mfa:admin", "")
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequestWithContext(ctxT(t), http.MethodDelete, e.srv.URL+"/verification-srv/admin/users/alice/lockout", nil)
	req.Header.Set("Authorization", "Bearer "+admin)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusNoContent {
		t.Fatalf("unlock: %d", res.StatusCode)
	}
	e.clock.Advance(30 * time.Second)
	if r := e.check(t, "alice", method.TOTP, code(t, secret, e.clock.Now())); r.Result != resultOK {
		t.Fatalf("right code after unlock: %+v", r)
	}
}

var recoveryCodeShape = regexp.MustCompile(`^[2-9A-HJ-NP-Z]{5}-[2-9A-HJ-NP-Z]{5}$`)

func (e *env) generateRecoveryCodes(t *testing.T, sub string) []string {
	t.Helper()
	resp, body := e.do(t, sub, http.MethodPost, "/verification-srv/backupcodes", "")
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("POST backupcodes: %d %s", resp.StatusCode, body)
	}
	var out struct {
		Codes     []string  `json:"codes"`
		CreatedAt time.Time `json:"created_at"`
	}
	if err := json.Unmarshal(body, &out); err != nil || out.CreatedAt.IsZero() {
		t.Fatalf("backupcodes body %s: %v", body, err)
	}
	return out.Codes
}

func (e *env) remaining(t *testing.T, sub string) int {
	t.Helper()
	resp, body := e.do(t, sub, http.MethodGet, "/verification-srv/backupcodes", "")
	var out struct {
		Remaining int `json:"remaining"`
	}
	if resp.StatusCode != http.StatusOK || json.Unmarshal(body, &out) != nil {
		t.Fatalf("GET backupcodes: %d %s", resp.StatusCode, body)
	}
	return out.Remaining
}

func TestRecoveryCodesAreUsableOnceAndReplacedAsASet(t *testing.T) {
	e := start(t)
	if n := e.remaining(t, "alice"); n != 0 {
		t.Fatalf("remaining before any set: %d", n)
	}
	if r := e.ready(t, "alice", method.BackupCode); r.Result != resultNone {
		t.Fatalf("ready without codes: %+v", r)
	}
	first := e.generateRecoveryCodes(t, "alice")
	if len(first) < 10 {
		t.Fatalf("%d codes, want at least 10", len(first))
	}
	seen := map[string]bool{}
	for _, c := range first {
		if !recoveryCodeShape.MatchString(c) || seen[c] {
			t.Fatalf("code %q is not a distinct XXXXX-XXXXX code of the unambiguous alphabet", c)
		}
		seen[c] = true
	}
	// Stored only as hashes: no code appears anywhere in the bucket.
	for k, v := range e.rawValues(t) {
		for _, c := range first {
			if strings.Contains(string(v), c) || strings.Contains(string(v), strings.ReplaceAll(c, "-", "")) {
				t.Fatalf("code %s stored in clear under %s", c, k)
			}
		}
	}
	// Typed loosely (lower case, spaces) it still works, once.
	typed := strings.ToLower(strings.ReplaceAll(first[0], "-", " "))
	if r := e.check(t, "alice", method.BackupCode, typed); r.Result != resultOK || r.Remaining != len(first)-1 {
		t.Fatalf("first use: %+v", r)
	}
	if r := e.check(t, "alice", method.BackupCode, first[0]); r.Result != resultReplayed {
		t.Fatalf("second use: %+v, want code_replayed", r)
	}
	if n := e.remaining(t, "alice"); n != len(first)-1 {
		t.Fatalf("remaining = %d", n)
	}
	// Two concurrent uses of one code by two authentications: one success.
	var wg sync.WaitGroup
	results := make([]string, 2)
	for i := range results {
		wg.Go(func() {
			var reply commands.FactorReply
			err := rpc.Call(ctxT(t), e.nc, commands.RegistryFactorsCheck,
				commands.FactorRequest{Sub: "alice", Method: method.BackupCode, Code: first[1], StatusID: "auth-2-" + strconv.Itoa(i)}, &reply)
			results[i] = outcomeOf(reply, err).Result
		})
	}
	wg.Wait()
	if !(results[0] == resultOK && results[1] == resultReplayed || results[1] == resultOK && results[0] == resultReplayed) {
		t.Fatalf("concurrent uses: %v", results)
	}
	// A new set: the old codes stop working.
	second := e.generateRecoveryCodes(t, "alice")
	if r := e.check(t, "alice", method.BackupCode, first[2]); r.Result != resultInvalid {
		t.Fatalf("old code after regeneration: %+v, want invalid_code", r)
	}
	if r := e.check(t, "alice", method.BackupCode, second[0]); r.Result != resultOK {
		t.Fatalf("new code: %+v", r)
	}
	// Events: generated twice, used three times, never a code.
	natstest.Eventually(t, wait, func() error {
		gen, used := e.events(t, events.RecoveryGenerated), e.events(t, events.RecoveryUsed)
		if len(gen) != 2 || len(used) != 3 {
			return errorf("%d generated, %d used events", len(gen), len(used))
		}
		for _, ev := range append(gen, used...) {
			for _, c := range append(first, second...) {
				if strings.Contains(string(ev.Raw), c[:5]) && strings.Contains(string(ev.Raw), c[6:]) {
					return errorf("event carries a code: %s", ev.Raw)
				}
			}
		}
		return nil
	})
	if r := e.check(t, "alice", method.BackupCode, "O0O0O-11111"); r.Result != resultMalformed {
		t.Fatalf("ambiguous characters: %+v, want malformed", r)
	}
}

func errorf(format string, args ...any) error { return fmt.Errorf(format, args...) }

func TestPushCapableDevices(t *testing.T) {
	e := start(t)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := key.PublicKey.Bytes() // 0x04 ‖ x ‖ y
	if err != nil {
		t.Fatal(err)
	}
	jwk := &commands.DeviceKey{Kty: "EC", Crv: "P-256", X: base64.RawURLEncoding.EncodeToString(raw[1:33]), Y: base64.RawURLEncoding.EncodeToString(raw[33:])}

	// A key that is not a point on the curve is refused at enrollment.
	statusID := "bad-key-enrollment"
	secret := e.create(t, statusID, "alice")
	bad := *jwk
	bad.Y = bad.X
	_, err = e.activate(t, commands.VerifyCredentialRequest{StatusID: statusID, Sub: "alice", Code: code(t, secret, e.clock.Now()), Device: commands.Device{Key: &bad}})
	assertCode(t, err, "bad_request")

	if r := e.ready(t, "alice", method.Push); r.Result != resultNone {
		t.Fatalf("ready for push without a push device: %+v", r)
	}
	plain, _ := e.enroll(t, "alice", commands.Device{Name: "TOTP only"})
	pushy, _ := e.enroll(t, "alice", commands.Device{Name: "Companion", Key: jwk})
	if r := e.ready(t, "alice", method.Push); r.Result != resultOK {
		t.Fatalf("ready for push: %+v", r)
	}
	var devs commands.PushDevicesReply
	if err := rpc.Call(ctxT(t), e.nc, commands.RegistryPushDevices, commands.DeviceRequest{Sub: "alice"}, &devs); err != nil {
		t.Fatal(err)
	}
	if len(devs.Devices) != 1 || devs.Devices[0].PHID != pushy.PHID || devs.Devices[0].Key == nil || *devs.Devices[0].Key != *jwk {
		t.Fatalf("push devices = %+v", devs)
	}
	var info commands.DeviceInfo
	if err := rpc.Call(ctxT(t), e.nc, commands.RegistryDeviceGet, commands.DeviceRequest{PHID: pushy.PHID}, &info); err != nil || info.Sub != "alice" || info.Key == nil {
		t.Fatalf("device get = %+v %v", info, err)
	}
	listed := map[string]bool{}
	for _, d := range e.list(t, "alice") {
		listed[d.PHID] = d.Push
	}
	if listed[pushy.PHID] != true || listed[plain.PHID] != false {
		t.Fatalf("device list push flags = %v", listed)
	}
	// A removed device can no longer be found for a login.
	resp, body := e.do(t, "alice", http.MethodDelete, "/device-srv/devices/"+pushy.PHID, "")
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("remove: %d %s", resp.StatusCode, body)
	}
	err = rpc.Call(ctxT(t), e.nc, commands.RegistryDeviceGet, commands.DeviceRequest{PHID: pushy.PHID}, &info)
	assertCode(t, err, "not_found")
	// A wrong push number counts like a wrong code.
	for i := 1; i <= 4; i++ {
		if r := e.factorCommand(t, commands.RegistryFactorsFailure, commands.FactorRequest{Sub: "alice"}); r.Result != resultOK {
			t.Fatalf("failure %d: %+v", i, r)
		}
	}
	if r := e.factorCommand(t, commands.RegistryFactorsFailure, commands.FactorRequest{Sub: "alice"}); r.Result != resultLocked || r.LockedUntil.IsZero() {
		t.Fatalf("5th failure: %+v", r)
	}
}

// TestReadinessHintChangesNoAnswer: a code check after the user's readiness reads the devices
// readiness found instead of the user's index first; a device added or removed since, or a
// wrong code, still gets the answer the index would give.
func TestReadinessHintChangesNoAnswer(t *testing.T) {
	e := start(t)
	first, firstSecret := e.enroll(t, "alice", commands.Device{DeviceID: "dev-1"})
	if r := e.ready(t, "alice", method.TOTP); r.Result != resultOK {
		t.Fatalf("ready: %+v", r)
	}
	// A second device, enrolled after the readiness that hinted at the first one only.
	second, secondSecret := e.enroll(t, "alice", commands.Device{DeviceID: "dev-2"})
	e.clock.Advance(30 * time.Second)
	if r := e.check(t, "alice", method.TOTP, code(t, secondSecret, e.clock.Now())); r.Result != resultOK || r.PHID != second.PHID {
		t.Fatalf("code of a device added after readiness: %+v, want ok for %s", r, second.PHID)
	}
	// The hinted device's code, a step later: taken from the hint.
	e.clock.Advance(30 * time.Second)
	if r := e.ready(t, "alice", method.TOTP); r.Result != resultOK {
		t.Fatalf("ready: %+v", r)
	}
	if r := e.check(t, "alice", method.TOTP, code(t, firstSecret, e.clock.Now())); r.Result != resultOK || r.PHID != first.PHID {
		t.Fatalf("code of the hinted device: %+v, want ok for %s", r, first.PHID)
	}
	// A wrong code is refused and counted as before.
	e.clock.Advance(30 * time.Second)
	if r := e.ready(t, "alice", method.TOTP); r.Result != resultOK {
		t.Fatalf("ready: %+v", r)
	}
	if r := e.check(t, "alice", method.TOTP, wrongCode(code(t, firstSecret, e.clock.Now()))); r.Result != resultInvalid {
		t.Fatalf("wrong code: %+v, want invalid_code", r)
	}
	// A hinted device removed since (by another replica: this one's hint is left as it was)
	// no longer takes its code; the remaining one does.
	st := e.store(t)
	c, err := st.Get(ctxT(t), first.PHID)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Remove(ctxT(t), c); err != nil {
		t.Fatal(err)
	}
	if r := e.check(t, "alice", method.TOTP, code(t, firstSecret, e.clock.Now())); r.Result != resultInvalid {
		t.Fatalf("code of a device removed after readiness: %+v, want invalid_code", r)
	}
	if r := e.check(t, "alice", method.TOTP, code(t, secondSecret, e.clock.Now())); r.Result != resultOK || r.PHID != second.PHID {
		t.Fatalf("code of the remaining device: %+v, want ok for %s", r, second.PHID)
	}
}
