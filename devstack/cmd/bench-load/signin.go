package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"sync/atomic"
	"time"

	"github.com/mfaflow/mfaflow/devstack/stack"
	"github.com/mfaflow/mfaflow/pkg/auth"
	"github.com/mfaflow/mfaflow/pkg/totp"
)

// The TOTP sign-in phase: what an identity provider's login service does all day. With its own
// service token (scope mfa:verify) it starts a sign-in for a user it names and finishes it with
// the code the user typed: two requests, answered 200 AUTHENTICATED.

// signInUser is a user with an enrolled TOTP device. last is the TOTP step of the user's last
// accepted code (the enrollment's included): the registry refuses a code of that step or an
// earlier one as replayed, so a user signs in at most once per step.
type signInUser struct {
	sub, secret string
	last        int64
}

// signInPool hands out users round-robin, continuing across phases, so that a user comes back
// as late as the pool allows.
type signInPool struct {
	users []*signInUser
	next  atomic.Int64
}

// poolPhase is one phase's view of the pool: it takes each user at most once.
type poolPhase struct {
	pool    *signInPool
	start   int64
	usedUp  atomic.Bool
	skipped atomic.Int64
}

func (p *signInPool) phase() *poolPhase { return &poolPhase{pool: p, start: p.next.Load()} }

// take is the next user who can sign in now and the step of the code to sign in with: the step
// after the user's last, at least ours and at most the next one. The server accepts ±1 step of
// its clock, which may have moved a step past ours by the time it checks, so a code of our step
// or the next is accepted either way. A user with no such step left is skipped; errStop once
// the phase went round the whole pool.
func (ph *poolPhase) take() (*signInUser, int64, error) {
	n := int64(len(ph.pool.users))
	for {
		i := ph.pool.next.Add(1) - 1
		if i-ph.start >= n {
			ph.usedUp.Store(true)
			return nil, 0, errStop
		}
		u := ph.pool.users[i%n]
		now := totp.Step(time.Now(), totp.Default)
		if step := max(u.last+1, now); step <= now+1 {
			u.last = step
			return u, step, nil
		}
		ph.skipped.Add(1)
	}
}

// enrollUsers enrolls n users named from index from on, each with a TOTP device by a typed
// code (initiation without QR, then the code, with the user's own token), c at a time.
func enrollUsers(st *stack.Stack, base string, from, n, c int, created *atomic.Int64) ([]*signInUser, error) {
	users := make([]*signInUser, n)
	rc := newRawClient(base, c)
	defer rc.close()
	err := parallelW(n, c, func(w, i int) error {
		sub := fmt.Sprintf("signin-%06d", from+i)
		tok, err := st.Token(sub)
		if err != nil {
			return err
		}
		conn := rc.conn(w)
		status, body, err := conn.do(rc.request(http.MethodPost, "/verification-srv/v2/setup/initiate/totp?qr=none", tok, nil))
		if err := ok(http.StatusOK)(status, body, err); err != nil {
			return fmt.Errorf("initiate for %s: %w", sub, err)
		}
		created.Add(1)
		var in initiation
		if err := json.Unmarshal(body, &in); err != nil {
			return err
		}
		now := time.Now()
		code, err := totp.Code(in.TOTPSecret, now, totp.Default)
		if err != nil {
			return err
		}
		enroll, _ := json.Marshal(map[string]string{"exchange_id": in.ExchangeID.ExchangeID, "verification_code": code})
		status, body, err = conn.do(rc.request(http.MethodPost, "/verification-srv/v2/setup/enroll/totp", tok, enroll))
		if err := ok(http.StatusOK)(status, body, err); err != nil {
			return fmt.Errorf("enroll %s: %w", sub, err)
		}
		users[i] = &signInUser{sub: sub, secret: in.TOTPSecret, last: totp.Step(now, totp.Default)}
		return nil
	})
	return users, err
}

// signInBench signs users of a pool in with a service token, a raw connection per worker.
type signInBench struct {
	rc                   *rawClient
	initHead, verifyHead []byte
	reqs, bodies         [][]byte // per worker, reused
}

func newSignInBench(base, serviceToken string, maxWorkers int) *signInBench {
	rc := newRawClient(base, maxWorkers)
	return &signInBench{
		rc:         rc,
		initHead:   rc.head(http.MethodPost, "/verification-srv/authentication/totp/initiation", serviceToken),
		verifyHead: rc.head(http.MethodPost, "/verification-srv/authentication/totp/verification", serviceToken),
		reqs:       make([][]byte, maxWorkers),
		bodies:     make([][]byte, maxWorkers),
	}
}

// run signs in on c workers for d, or until the phase has taken every user of the pool once.
func (b *signInBench) run(pool *signInPool, c int, d time.Duration) rate {
	ph := pool.phase()
	r := loop(c, d, func(w int) error { return b.signIn(w, ph) })
	if ph.usedUp.Load() {
		fmt.Fprintf(os.Stderr, "  %d clients: every one of the %d users signed in or was skipped (%d with no free TOTP step) before %s\n", c, len(pool.users), ph.skipped.Load(), d)
	}
	return r
}

var (
	exchangeKey   = []byte(`"exchange_id":"`)
	authenticated = []byte(`"status":"AUTHENTICATED"`)
)

// signIn is one sign-in: initiation for the user, then verification with the user's code.
func (b *signInBench) signIn(w int, ph *poolPhase) error {
	u, step, err := ph.take()
	if err != nil {
		return err
	}
	conn := b.rc.conn(w)
	body := append(append(append(b.bodies[w][:0], `{"sub":"`...), u.sub...), `"}`...)
	b.reqs[w] = appendJSONBody(b.reqs[w], b.initHead, body)
	status, resp, err := conn.do(b.reqs[w])
	if err := ok(http.StatusOK)(status, resp, err); err != nil {
		return fmt.Errorf("initiation: %w", err)
	}
	// {"exchange_id":{"exchange_id":"…",…},…}: the first key followed by a string is the id.
	i := bytes.Index(resp, exchangeKey)
	if i < 0 {
		return fmt.Errorf("initiation answer without exchange id: %.200s", resp)
	}
	id := resp[i+len(exchangeKey):]
	if j := bytes.IndexByte(id, '"'); j >= 0 {
		id = id[:j]
	}
	code, err := totp.Code(u.secret, time.Unix(step*int64(totp.Default.Period), 0), totp.Default)
	if err != nil {
		return err
	}
	body = append(append(append(body[:0], `{"exchange_id":"`...), id...), `","pass_code":"`...)
	body = append(append(body, code...), `"}`...)
	b.bodies[w] = body
	b.reqs[w] = appendJSONBody(b.reqs[w], b.verifyHead, body)
	status, resp, err = conn.do(b.reqs[w])
	if err := ok(http.StatusOK)(status, resp, err); err != nil {
		return fmt.Errorf("verification: %w", err)
	}
	if !bytes.Contains(resp, authenticated) {
		return fmt.Errorf("verification not AUTHENTICATED: %.200s", resp)
	}
	return nil
}

// chartPoint is a figure of the sign-in chart at one client count.
type chartPoint struct {
	clients            int
	signIns, bare      float64 // per second
	signInP99, bareP99 time.Duration
	signInP50, bareP50 time.Duration
}

// signInChart is what the sign-in phase measured, for -svg.
var signInChart []chartPoint

// signInLevels are the client counts of the sign-in figures.
var signInLevels = []int{1, 8, 32}

// benchSignIn runs on a dev stack of its own: the first p50 needs a nearly empty store, and the
// other phases must not pay for the users it stores.
func benchSignIn(bare string) error {
	st, stop, err := startStack()
	if err != nil {
		return err
	}
	defer stop()
	base := st.URL()
	var created atomic.Int64
	svc, err := st.TokenScoped("bench-login-service", auth.ScopeVerify, "bench-login")
	if err != nil {
		return err
	}
	maxC := signInLevels[len(signInLevels)-1]
	b := newSignInBench(base, svc, maxC)
	defer b.rc.close()

	// The 1-client p50 on a nearly empty store, then again after many more users.
	t0 := time.Now()
	first, err := enrollUsers(st, base, 0, *signFirst, 16, &created)
	if err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "  enrolled %d users in %s\n", len(first), time.Since(t0).Round(time.Millisecond))
	pool := &signInPool{users: first}
	settle()
	empty := b.run(pool, 1, *phase)
	firstErrors(empty)

	t0 = time.Now()
	more, err := enrollUsers(st, base, len(first), *signMore, 32, &created)
	if err != nil {
		return err
	}
	took := time.Since(t0)
	add(row{fmt.Sprintf("%d more users with a TOTP device (typed-code enrollments, 32 at a time)", len(more)),
		fmt.Sprintf("%.1f s (%.0f enrollments/s)", took.Seconds(), float64(len(more))/took.Seconds()), "", "", ""})
	pool.users = append(first, more...)

	bareC := newRawClient(bare, maxC)
	defer bareC.close()
	bareReq := bareC.request(http.MethodPost, "/json", "", []byte(`{"sub":"signin-000000"}`))
	bareFn := func(w int) error { return ok(http.StatusOK)(bareC.conn(w).do(bareReq)) }

	settle()
	bare1 := loop(1, *phase, bareFn)
	one := b.run(pool, 1, *phase)
	firstErrors(bare1, one)
	growth := float64(one.p50) / float64(empty.p50)
	add(row{fmt.Sprintf("sign-in p50, 1 client: %d users → %d users", len(first), len(pool.users)),
		fmt.Sprintf("%s → %s", ms(empty.p50), ms(one.p50)), "", fmt.Sprintf("%.2f×", growth), judge(growth <= 1.3, "≤ 1.3×")})

	// 8 and 32 clients in interleaved rounds, bare before each, as against does.
	levels := signInLevels[1:]
	bares := make([][]rate, len(levels))
	signs := make([][]rate, len(levels))
	ratios := make([][]float64, len(levels))
	notFewer := 0
	for range max(*rounds, 1) {
		settle()
		for i, c := range levels {
			br := loop(c, *phase, bareFn)
			sr := b.run(pool, c, *phase)
			bares[i], signs[i] = append(bares[i], br), append(signs[i], sr)
			ratios[i] = append(ratios[i], sr.perSec/br.perSec)
		}
		if n := len(levels); signs[n-1][len(signs[n-1])-1].perSec >= signs[n-2][len(signs[n-2])-1].perSec {
			notFewer++
		}
	}

	signInChart = signInChart[:0]
	addSignIn := func(c int, sr, br rate, ratio float64, target string) {
		v := fmt.Sprintf("%.0f sign-ins/s, p50 %s, p99 %s", sr.perSec, ms(sr.p50), ms(sr.p99))
		if sr.bad > 0 {
			v += fmt.Sprintf(" (%d errors)", sr.bad)
			fmt.Fprintf(os.Stderr, "  TOTP sign-ins, %d clients: first error: %s\n", c, sr.firstEr)
		}
		add(row{fmt.Sprintf("TOTP sign-ins, %d client%s", c, plural(c)), v, reqs(br), fmt.Sprintf("%.1f %%", 100*ratio), target})
		signInChart = append(signInChart, chartPoint{clients: c, signIns: sr.perSec, bare: br.perSec,
			signInP50: sr.p50, signInP99: sr.p99, bareP50: br.p50, bareP99: br.p99})
	}
	addSignIn(1, one, bare1, one.perSec/bare1.perSec, judge(one.p50 <= 1500*time.Microsecond, "p50 ≤ 1.5 ms"))
	for i, c := range levels {
		r, target := median(ratios[i]), ""
		if c == maxC {
			target = judge(r >= 0.05, "≥ 5 % of bare")
		}
		addSignIn(c, medianRate(signs[i]), medianRate(bares[i]), r, target)
		firstErrors(bares[i]...)
		firstErrors(signs[i]...)
	}
	n := len(levels)
	hi, lo := medianRate(signs[n-1]).perSec, medianRate(signs[n-2]).perSec
	add(row{fmt.Sprintf("sign-ins/s at %d clients ÷ at %d", levels[n-1], levels[n-2]),
		fmt.Sprintf("%.2f× (not fewer in %d of %d rounds)", hi/lo, notFewer, max(*rounds, 1)), "", "",
		judge(hi >= lo, fmt.Sprintf("never fewer at %d than at %d", levels[n-1], levels[n-2]))})
	return nil
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}
