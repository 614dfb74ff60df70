package natsapi

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"

	"github.com/mfaflow/mfaflow/events/commands"
	"github.com/mfaflow/mfaflow/pkg/ids"
	"github.com/mfaflow/mfaflow/pkg/metrics"
	"github.com/mfaflow/mfaflow/services/status/internal/enrollment"
	"github.com/mfaflow/mfaflow/services/status/internal/signin"
	"github.com/nats-io/nats.go"
)

// Live announces transitions on core NATS and lets HTTP subscribers hear them, whichever
// replica made the change.
//
// A replica holds one NATS subscription for all its live streams (on
// StatusChangedPrefix + "*") and fans announcements out in memory, so an idle stream costs a
// map entry and a small channel, not a NATS subscription with its own delivery goroutine and
// server-side interest. Every replica then receives every announcement: one small message per
// change, independent of how many streams are open.
type Live struct {
	NC  *nats.Conn
	Log *slog.Logger

	mu     sync.Mutex
	shared *nats.Subscription
	// streams are the channels of each watched status object: nearly always one, so a slice.
	streams map[string][]chan *commands.EnrollmentReply
}

var _ enrollment.Notifier = (*Live)(nil)

// Changed implements enrollment.Notifier.
func (l *Live) Changed(e enrollment.Enrollment) { l.announce(toReply(e)) }

// SignIns is l as the sign-ins' notifier: the same subjects, the same announcement.
func (l *Live) SignIns() signin.Notifier { return signInNotifier{l} }

type signInNotifier struct{ l *Live }

// Changed implements signin.Notifier.
func (n signInNotifier) Changed(a signin.Authentication) { n.l.announce(toSignInReply(a)) }

func (l *Live) announce(r commands.EnrollmentReply) {
	data, err := json.Marshal(r)
	if err == nil {
		err = l.NC.Publish(commands.StatusChangedPrefix+r.ID, data)
	}
	if err != nil {
		l.Log.Warn("live announcement failed", "status_id", r.ID, "err", err)
	}
}

// Subscribe delivers announcements for one status object (an enrollment or a sign-in) until
// cancel is called. The channel holds a few;
// a slow subscriber drops announcements and catches up by re-reading the store. Every subscriber
// of a status object receives the same decoded announcement, which it must not modify; pointers
// keep an idle subscriber's channel small.
// An id that cannot exist (see ids.Valid) is refused with ids.ErrInvalid: it never reaches the
// server, where an oversized subject would close the whole connection.
func (l *Live) Subscribe(statusID string) (<-chan *commands.EnrollmentReply, func(), error) {
	if !ids.Valid(statusID) {
		return nil, nil, fmt.Errorf("subscribe: %w", ids.ErrInvalid)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.shared == nil {
		sub, err := l.NC.Subscribe(commands.StatusChangedPrefix+"*", l.deliver)
		if err != nil {
			return nil, nil, err
		}
		// Flush so the subscription is registered with the server before any caller reads the
		// current state: nothing that happens after that read can be missed.
		if err := l.NC.Flush(); err != nil {
			_ = sub.Unsubscribe()
			return nil, nil, err
		}
		// Announcements are small and fanned out without blocking; a replica with many busy
		// streams must not have the shared subscription cut off as a slow consumer.
		_ = sub.SetPendingLimits(-1, 64<<20)
		l.shared = sub
		l.streams = map[string][]chan *commands.EnrollmentReply{}
	}
	out := make(chan *commands.EnrollmentReply, 4)
	l.streams[statusID] = append(l.streams[statusID], out)
	metrics.LiveSubscribers.Inc()
	var once sync.Once
	return out, func() { once.Do(func() { l.remove(statusID, out); metrics.LiveSubscribers.Dec() }) }, nil
}

func (l *Live) remove(statusID string, out chan *commands.EnrollmentReply) {
	l.mu.Lock()
	defer l.mu.Unlock()
	set := slices.DeleteFunc(l.streams[statusID], func(c chan *commands.EnrollmentReply) bool { return c == out })
	if len(set) == 0 {
		delete(l.streams, statusID)
	} else {
		l.streams[statusID] = set
	}
}

// deliver fans one announcement out to the streams watching its status object.
func (l *Live) deliver(m *nats.Msg) {
	id := strings.TrimPrefix(m.Subject, commands.StatusChangedPrefix)
	l.mu.Lock()
	defer l.mu.Unlock()
	set := l.streams[id]
	if len(set) == 0 {
		return
	}
	var r commands.EnrollmentReply
	if json.Unmarshal(m.Data, &r) != nil || r.ID != id {
		return
	}
	for _, out := range set {
		select {
		case out <- &r:
		default:
		}
	}
}

// Watched is the number of status objects with at least one live stream on this replica.
func (l *Live) Watched() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.streams)
}
