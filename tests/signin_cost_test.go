package tests_test

import (
	"context"
	"errors"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// TestSignInCost holds a TOTP sign-in (service token: initiation and verification) to what it
// needs in the stores and on the wire: the authentication is named after its exchange id, so the
// status bucket keeps no exchange index (x.<exchange_id>) for it and the verification finds it
// with one read, and the messages one sign-in sends through NATS stay under a bound (a wiretap
// on every subject counts them). The count is of messages, not time: it does not move with the
// machine's load.
func TestSignInCost(t *testing.T) {
	s := startSignIn(t, nil)
	const users = 4
	var secrets []string
	for i := range users {
		secrets = append(secrets, s.enrollDevice(t, s.token(t, "cost-"+string(rune('a'+i)), "", "")))
	}
	idp := s.token(t, "login-service", "mfa:verify", "shop")
	nc, err := nats.Connect(s.NATSURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	// The window is bounded by two marks the wiretap publishes to itself: the server delivers a
	// connection's messages in order, so what reached the server between the marks is what the
	// callback sees between them, however far the callback lags (a flag set by the test
	// goroutine missed messages still queued for the callback, and counted too few).
	var (
		mu       sync.Mutex
		bySubj   = map[string]int{}
		counting bool
		started  = make(chan struct{})
		stopped  = make(chan struct{})
	)
	const startMark, stopMark = "wiretap.start", "wiretap.stop"
	// heard counts the messages that change or announce something (writes, events, acks,
	// commands), counted or not, for the wait for quiet below; replies, API calls and
	// heartbeats keep coming on timers.
	var heard int
	sub, err := nc.Subscribe(">", func(m *nats.Msg) {
		mu.Lock()
		defer mu.Unlock()
		if strings.HasPrefix(m.Subject, "$KV.") || strings.HasPrefix(m.Subject, "mfa.") || strings.HasPrefix(m.Subject, "$JS.ACK.") {
			heard++
		}
		switch m.Subject {
		case startMark:
			counting = true
			close(started)
			return
		case stopMark:
			counting = false
			close(stopped)
			return
		}
		if !counting {
			return
		}
		class := m.Subject
		switch {
		case strings.HasPrefix(class, "$JS.EVENT.") || strings.HasPrefix(class, "$JS.API.CONSUMER."):
			return // advisories and the expiry sweep's listings: on a timer, not per sign-in
		case strings.HasPrefix(class, "_INBOX."):
			class = "_INBOX (replies)"
		case strings.HasPrefix(class, "$KV."):
			parts := strings.SplitN(class, ".", 4)
			class = "$KV." + parts[1] + "." + strings.SplitN(parts[2], ".", 2)[0]
		case strings.HasPrefix(class, "$JS.API.DIRECT.GET."):
			class = "$JS.API.DIRECT.GET"
		case strings.HasPrefix(class, "$JS.ACK."):
			class = "$JS.ACK"
		case strings.HasPrefix(class, "mfa.status.v1.changed."):
			class = "mfa.status.v1.changed"
		case strings.HasPrefix(class, "mfa.events."):
			class = "mfa.events"
		}
		bySubj[class]++
	})
	if err != nil {
		t.Fatal(err)
	}
	// A wiretap that fell behind would drop messages and count too few.
	if err := sub.SetPendingLimits(-1, -1); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	s.nextStep()
	awaitMark := func(subject string, seen <-chan struct{}) {
		t.Helper()
		if err := nc.Publish(subject, nil); err != nil {
			t.Fatal(err)
		}
		select {
		case <-seen:
		case <-time.After(10 * time.Second):
			t.Fatalf("the wiretap did not see %s", subject)
		}
	}
	// The enrollments above leave work behind (the notifier's notices, the expiry sweep after
	// the clock's step, index entries dropped in the background): the window opens once NATS
	// has been quiet for a moment, so that it counts the sign-ins.
	deadline := time.Now().Add(15 * time.Second)
	for {
		mu.Lock()
		before := heard
		mu.Unlock()
		<-time.After(300 * time.Millisecond)
		mu.Lock()
		quiet := heard == before
		mu.Unlock()
		if quiet {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("NATS did not go quiet before the sign-ins")
		}
	}
	awaitMark(startMark, started)
	for i := range users {
		in := s.startAuth(t, idp, "totp", map[string]string{"sub": "cost-" + string(rune('a'+i))})
		r := s.verify(t, idp, "totp", in.ExchangeID.ExchangeID, s.code(t, secrets[i]))
		if r.Status != http.StatusOK {
			t.Fatalf("sign-in: %d %s", r.Status, r.Body)
		}
	}
	awaitMark(stopMark, stopped)
	mu.Lock()
	total := 0
	var lines []string
	for k, v := range bySubj {
		total += v
		lines = append(lines, k+": "+strconv.Itoa(v))
	}
	mu.Unlock()
	if dropped, err := sub.Dropped(); err != nil || dropped > 0 {
		t.Fatalf("the wiretap dropped %d messages (%v): the count is not complete", dropped, err)
	}
	_ = sub.Unsubscribe()
	sort.Strings(lines)
	t.Logf("messages per %d sign-ins: %d\n%s", users, total, strings.Join(lines, "\n"))
	// About 34 a sign-in now (33-35 over runs: the relays' and the poll view's own writes land
	// in the window too); about 40 before the poll view followed the relay's watch, the
	// verification read the sign-in from the view, readiness read the user's index alone and
	// the code check read the devices readiness found; 62 while sign-ins had an exchange index,
	// every document write read its value again, a user's credentials were found by
	// next-by-subject reads and a right code read the lockout twice. Requests, replies, store
	// writes and their deliveries to the relays, events, live announcements.
	if perSignIn := float64(total) / users; perSignIn > 38 {
		t.Errorf("%.1f NATS messages per sign-in, want at most 38", perSignIn)
	}

	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	kv, err := js.KeyValue(context.Background(), "mfa_enrollments")
	if err != nil {
		t.Fatal(err)
	}
	lister, err := kv.ListKeysFiltered(context.Background(), "x.*")
	if err != nil && !errors.Is(err, jetstream.ErrNoKeysFound) {
		t.Fatal(err)
	}
	var xs []string
	if lister != nil {
		for k := range lister.Keys() {
			xs = append(xs, k)
		}
	}
	if len(xs) != 0 {
		t.Errorf("exchange index keys after sign-ins: %v, want none (a sign-in is named after its exchange id)", xs)
	}
}
