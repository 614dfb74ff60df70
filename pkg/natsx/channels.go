package natsx

import (
	"context"
	"encoding/json"
	"sync"
	"time"

	"github.com/mfaflow/mfaflow/events/commands"
	"github.com/mfaflow/mfaflow/pkg/delivery"
	"github.com/mfaflow/mfaflow/pkg/fault"
	"github.com/nats-io/nats.go"
)

// NotifierChannels asks the notifier which channels it can deliver on
// (commands.NotifierChannels) and remembers the answer for a few seconds: methods light up
// shortly after a notifier starts and go dark shortly after the last one stops, without a
// request per code.
type NotifierChannels struct {
	NC *nats.Conn
	// NoAnswerGrace is how long "nobody answers" counts as a notifier on its way (ErrNoAnswerYet)
	// before it counts as no notifier at all (nothing active); zero means 15 s.
	NoAnswerGrace time.Duration

	mu      sync.Mutex
	reply   commands.ChannelsReply
	checked time.Time
	// answered is when the notifier last answered (a timeout keeps that answer, channelsStale).
	answered time.Time
	// unanswered is when the first of the asks that have gone unanswered since the last answer
	// was made (zero after an answer).
	unanswered time.Time
}

// channelsTTL is how long an answer is kept; channelsStale how long the last one stands in when
// the notifier does not answer in time.
const (
	channelsTTL   = 5 * time.Second
	channelsStale = time.Minute
)

// ErrNoAnswerYet is the answer while no notifier has answered and the first unanswered ask is
// recent: a notifier may be starting, or its interest may not have crossed the cluster yet after
// a restart. The caller should retry (503 unavailable), not conclude the method is off (409).
var ErrNoAnswerYet = fault.New(fault.Unavailable, "the notifier has not answered yet; try again in a moment")

// Active reports whether the notifier delivers on channel (pkg/delivery: email, sms), or
// ErrNoAnswerYet.
func (n *NotifierChannels) Active(ctx context.Context, channel string) (bool, error) {
	r, err := n.Reply(ctx)
	if err != nil {
		return false, err
	}
	switch channel {
	case delivery.Email:
		return r.Email, nil
	case delivery.SMS:
		return r.SMS, nil
	}
	return false, nil
}

// Reply returns the notifier's last answer: nothing active once no notifier has answered for
// NoAnswerGrace, ErrNoAnswerYet before that.
func (n *NotifierChannels) Reply(ctx context.Context) (commands.ChannelsReply, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	now := time.Now()
	if !n.checked.IsZero() && now.Sub(n.checked) < channelsTTL {
		return n.reply, nil
	}
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	var r commands.ChannelsReply
	msg, err := n.NC.RequestWithContext(ctx, commands.NotifierChannels, nil)
	if err == nil && json.Unmarshal(msg.Data, &r) == nil {
		n.reply, n.checked, n.answered, n.unanswered = r, now, now, time.Time{}
		return r, nil
	}
	// No answer (no notifier reachable right now: it is starting or restarting, or its interest
	// has not crossed the cluster yet; or a timeout): the last answer stands for a while, so a
	// hiccup does not turn EMAIL and SMS off. Nothing is cached otherwise, and the next call
	// asks again (a request without responders fails at once), so a notifier that comes up is
	// seen at once.
	if n.unanswered.IsZero() {
		n.unanswered = now
	}
	if !n.answered.IsZero() && now.Sub(n.answered) < channelsStale {
		n.checked = now
		return n.reply, nil
	}
	grace := n.NoAnswerGrace
	if grace == 0 {
		grace = 15 * time.Second
	}
	if now.Sub(n.unanswered) < grace {
		return commands.ChannelsReply{}, ErrNoAnswerYet
	}
	return commands.ChannelsReply{}, nil
}
