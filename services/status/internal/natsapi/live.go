package natsapi

import (
	"encoding/json"
	"fmt"
	"log/slog"

	"github.com/mfaflow/mfaflow/pkg/commands"
	"github.com/mfaflow/mfaflow/services/status/internal/enrollment"
	"github.com/nats-io/nats.go"
)

// Live announces transitions on core NATS and lets HTTP subscribers hear them, whichever
// replica made the change.
type Live struct {
	NC  *nats.Conn
	Log *slog.Logger
}

var _ enrollment.Notifier = (*Live)(nil)

// Changed implements enrollment.Notifier.
func (l *Live) Changed(e enrollment.Enrollment) {
	data, err := json.Marshal(ToReply(e))
	if err == nil {
		err = l.NC.Publish(commands.StatusChangedPrefix+e.ID, data)
	}
	if err != nil {
		l.Log.Warn("live announcement failed", "status_id", e.ID, "err", err)
	}
}

// Subscribe delivers announcements for one enrollment until cancel is called. The channel
// holds a few; a slow subscriber drops announcements and catches up by re-reading the store.
// An id that cannot exist (see ValidID) is refused with ErrInvalidID: it never reaches the
// server, where an oversized subject would close the whole connection.
func (l *Live) Subscribe(statusID string) (<-chan commands.EnrollmentReply, func(), error) {
	if !ValidID(statusID) {
		return nil, nil, fmt.Errorf("subscribe: %w", ErrInvalidID)
	}
	out := make(chan commands.EnrollmentReply, 8)
	sub, err := l.NC.Subscribe(commands.StatusChangedPrefix+statusID, func(m *nats.Msg) {
		var r commands.EnrollmentReply
		if json.Unmarshal(m.Data, &r) != nil {
			return
		}
		select {
		case out <- r:
		default:
		}
	})
	if err != nil {
		return nil, nil, err
	}
	// Flush so the subscription is registered with the server before the caller reads the
	// current state: nothing that happens after that read can be missed.
	if err := l.NC.Flush(); err != nil {
		_ = sub.Unsubscribe()
		return nil, nil, err
	}
	return out, func() { _ = sub.Unsubscribe() }, nil
}
